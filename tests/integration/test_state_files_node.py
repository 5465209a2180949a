"""Damaged state files on a real node: the agent explains them in one line and
changes nothing. A decision (the journal, images.json, rejected.json) stops every
update; `status` shows it; a cache is ignored with one warning and rebuilt.

One node serves every case (the cases only read or plan), so each case puts back
the file it damaged."""

import contextlib
import json
import os
import shutil
import subprocess
import sys

import pytest

import world
from world import agent

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]

STATE = "var/lib/update-agent"


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    return world.World(str(tmp_path_factory.mktemp("statefiles")))


@pytest.fixture(scope="module")
def shared(w, tmp_path_factory):
    """A node on image A with the metadata for B, staged once by a dry run: its
    image record and manifest cache exist. Yields (node, metadata, snapshot)."""
    tmp = str(tmp_path_factory.mktemp("shared"))
    n = w.node(tmp)
    try:
        meta = w.metadata_for_b(tmp)
        r = agent(n.root, "--dry-run", metadata=meta)
        assert r.returncode == 0, r.stderr
        yield n, meta, world.snapshot(n.root)
    finally:
        n.stop()


def _state(node, name):
    return os.path.join(node.root, STATE, name)


@contextlib.contextmanager
def damaged(node, name, data):
    """The state file `name` holds data inside the block; put back as it was after."""
    path = _state(node, name)
    before = open(path, "rb").read() if os.path.exists(path) else None
    with open(path, "wb") as f:
        f.write(data)
    try:
        yield path
    finally:
        if before is None:
            os.unlink(path)
        else:
            with open(path, "wb") as f:
                f.write(before)


def assert_one_line_naming(r, path):
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert path in lines[0], r.stderr
    assert "Traceback" not in r.stderr and "unexpected" not in r.stderr, r.stderr
    return lines[0]


JOURNAL = {"format": 1, "image_id": "img-B", "digest": "", "previous_image_id": "img-A",
           "previous_digest": "", "action": "in-place", "root_was_ro": True, "started_at": 1.0,
           "steps": {"sync": "started"}, "status": "running"}
DECISIONS = {
    "journal.json": {"garbage": b"\x00\x17\xffgarbage", "a list": b"[\"img-B\"]",
                     "missing a field": json.dumps({k: v for k, v in JOURNAL.items()
                                                    if k != "image_id"}).encode(),
                     "ill-typed field": json.dumps(dict(JOURNAL, steps={"sync": 1})).encode()},
    "images.json": {"garbage": b"{\"current\": {\"image_id\": ", "a list": b"[]",
                    "ill-typed field": b"{\"current\": \"img-A\"}"},
    "rejected.json": {"garbage": b"\xff" * 10, "a list": b"[\"img-B\"]",
                      "ill-typed field": b"{\"img-B\": {\"why\": 7}}"},
}
FIELDS = {("journal.json", "missing a field"): "image_id: is missing",
          ("journal.json", "ill-typed field"): "steps.sync: is a number",
          ("images.json", "ill-typed field"): "current: is a string",
          ("rejected.json", "ill-typed field"): "img-B.why: is a number"}
CASES = [(name, kind) for name, kinds in DECISIONS.items() for kind in kinds]


@pytest.mark.parametrize("name, kind", CASES, ids=["%s %s" % c for c in CASES])
@pytest.mark.parametrize("command", [("apply",), ("--dry-run",)], ids=["apply", "dry-run"])
def test_a_damaged_decision_stops_the_update_and_changes_nothing(shared, name, kind, command):
    node, meta, snapshot = shared
    with damaged(node, name, DECISIONS[name][kind]) as path:
        r = agent(node.root, *command, metadata=meta)
        assert r.returncode == 1, r.stderr
        line = assert_one_line_naming(r, path)
        assert FIELDS.get((name, kind), "") in line
        assert open(path, "rb").read() == DECISIONS[name][kind], "the damaged file was rewritten"
    assert world.snapshot(node.root) == snapshot, "the root changed"
    assert "ro" in world.root_mount_options(node.root)


@pytest.mark.parametrize("name, kind", [c for c in CASES if c[0] != "rejected.json"],
                         ids=["%s %s" % c for c in CASES if c[0] != "rejected.json"])
def test_status_shows_a_damaged_journal_or_image_state(shared, name, kind):
    node, meta, snapshot = shared
    with damaged(node, name, DECISIONS[name][kind]) as path:
        r = agent(node.root, "status")
        assert r.returncode == 0, r.stderr
        assert_one_line_naming(r, path)
        assert "damaged:  " + path in r.stdout, r.stdout
        if name == "journal.json":
            assert "update:   unknown: the journal is damaged" in r.stdout
        r = agent(node.root, "status", "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["damaged"][0].startswith(path)
    assert world.snapshot(node.root) == snapshot, "the root changed"


def test_a_damaged_hold_is_shown_as_held(shared):
    node, meta, snapshot = shared
    with damaged(node, "hold.json", b"{\"reason\": 5}") as path:
        r = agent(node.root, "status")
        assert r.returncode == 0, r.stderr
        assert_one_line_naming(r, path)
        assert "held:     hold.json is damaged (reason: is a number, not a string)" in r.stdout, r.stdout


CACHES = [
    ("status.json", "status.json", b"[\"not\", \"a status\"]", ("status",), "ignored"),
    ("status.json field", "status.json", b"{\"desired\": \"img-B\"}", ("status",), "desired"),
    ("history line", "history.jsonl", b"{\"result\": \"success\"}\n[1]\n{\"result\": 7}\n"
     b"{\"result\": \"success\", \"image_id\": \"img-A\"}\n", ("history",), "skipped"),
    ("history in status", "history.jsonl", b"\x00\xff\n{\"result\": \"noop\"}\n", ("status",), "line 1"),
    ("node manifest", "node-manifest.tsv", b"\x00garbage\n", ("--dry-run",), "rebuilt"),
]


@pytest.mark.parametrize("case, name, data, command, words", CACHES, ids=[c[0] for c in CACHES])
def test_a_damaged_cache_is_ignored_with_one_warning(shared, case, name, data, command, words):
    node, meta, snapshot = shared
    with damaged(node, name, data) as path:
        r = agent(node.root, *command, metadata=meta)
        assert r.returncode == 0, r.stderr
        line = assert_one_line_naming(r, path)
        assert words in line, line
    assert world.snapshot(node.root) == snapshot, "the root changed"


def _staged(node, ext):
    images = os.path.join(node.root, STATE, "images")
    (name,) = [n for n in os.listdir(images) if n.endswith(ext)]
    return "images/" + name


@pytest.mark.parametrize("ext, data, words", [
    (".json", b"{\"image_id\": \"img-B\", \"digest\": 7, \"format\": \"ext4\"}", "digest: is a number"),
    (".json", b"[]", "not an object"),
    (".manifest", b"# update-agent manifest v2\nx\tf\tzz\n", "rebuilt"),
], ids=["record ill-typed", "record a list", "manifest cache"])
def test_a_damaged_image_cache_is_rebuilt(shared, ext, data, words):
    node, meta, snapshot = shared
    name = _staged(node, ext)
    with damaged(node, name, data) as path:
        r = agent(node.root, "--dry-run", metadata=meta)
        assert r.returncode == 0, r.stderr
        line = assert_one_line_naming(r, path)
        assert words in line, line
        assert open(path, "rb").read() != data, "not rebuilt"
    assert world.snapshot(node.root) == snapshot, "the root changed"


def test_the_documented_repair_of_a_damaged_journal_converges(w, node, tmp_path):
    # killed between the sync and the commit: the root is mixed, then the journal is damaged
    meta = w.metadata_for_b(str(tmp_path))
    env = dict(os.environ, PYTHONPATH=os.path.join(world.PROJECT, "agent"),
               UPDATE_AGENT_FAULT_KILL_AT="sync:done")
    subprocess.run([sys.executable, "-m", "update_agent", "--root", node.root, "--metadata", meta,
                    "apply"], env=env, start_new_session=True, capture_output=True, timeout=300)
    assert world.read(node, "etc/image_id") == b"img-A\n"
    journal = _state(node, "journal.json")
    with open(journal, "r+b") as f:
        f.truncate(40)  # torn
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 1 and "docs/state.md" in assert_one_line_naming(r, journal)
    # docs/state.md: inspect, put / back read-only, move the journal aside, run again
    assert "damaged:  " + journal in agent(node.root, "status").stdout
    subprocess.run(["mount", "-o", "remount,ro", node.root], check=True)
    shutil.move(journal, journal + ".damaged")
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 0, r.stderr
    world.assert_matches_image(node.root, w.tree_b)
    assert world.read(node, "etc/image_id") == b"img-B\n"
    assert "ro" in world.root_mount_options(node.root)
