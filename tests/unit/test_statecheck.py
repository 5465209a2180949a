"""Each state file fed garbage, the wrong JSON type and missing or ill-typed fields:
a decision (journal, image state, rejections, deployments) is refused with one line
naming the file and the field; a hold holds; a cache is ignored with a warning."""

import json
import logging
import os

import pytest

from update_agent.state import journal, records, statecheck
from update_agent.state.store import Store
from update_agent.apply import live
from update_agent.images.store import ImageStore
from update_agent.state.statecheck import DamagedState

GOOD_JOURNAL = {"format": 1, "image_id": "img-B", "digest": "sha256:" + "b" * 64,
                "previous_image_id": "img-A", "previous_digest": "", "action": "in-place",
                "root_was_ro": True, "started_at": 1.5, "steps": {"sync": "started"},
                "failed_units": None}

GARBAGE = [
    ("garbage bytes", b"\x00\xffnot json at all", "", "not UTF-8"),
    ("text that is not JSON", b"{\"image_id\": ", "", "not JSON"),
    ("empty file", b"", "", "not JSON"),
    ("NaN", b"NaN", "", "not JSON"),
    ("nested past the limit", b"[" * 70 + b"]" * 70, "", "nests deeper"),
    ("nested past the parser", b"[" * 100000 + b"]" * 100000, "", "nests deeper"),
    ("a list", b"[]", "", "is an array, not an object"),
    ("a string", b"\"img-B\"", "", "is a string, not an object"),
    ("a number", b"7", "", "is a number, not an object"),
    ("null", b"null", "", "is null, not an object"),
]


def _bytes(value):
    return json.dumps(value).encode()


def _journal_with(**change):
    data = dict(GOOD_JOURNAL, **change)
    return _bytes({k: v for k, v in data.items() if v is not _GONE})


_GONE = object()

JOURNALS = GARBAGE + [
    ("no image_id", _journal_with(image_id=_GONE), "image_id", "is missing"),
    ("image_id a number", _journal_with(image_id=5), "image_id", "is a number, not a string"),
    ("root_was_ro a string", _journal_with(root_was_ro="yes"), "root_was_ro",
     "is a string, not true/false"),
    ("started_at true", _journal_with(started_at=True), "started_at", "is true/false, not a number"),
    ("steps a list", _journal_with(steps=["sync"]), "steps", "is an array"),
    ("a step state unknown", _journal_with(steps={"sync": "half"}), "steps.sync", "not one of"),
    ("a status unknown", _journal_with(status="paused"), "status", '"paused", not one of running'),
    ("a status a number", _journal_with(status=3), "status", "is a number, not a string"),
    ("failed_units a string", _journal_with(failed_units="ssh"), "failed_units", "is a string"),
    ("kept holds a number", _journal_with(kept=[1]), "kept[0]", "is a number"),
    ("no format", _journal_with(format=_GONE), "format", "is missing"),
    ("format a string", _journal_with(format="1"), "format", "is a string, not a number"),
]


def _store(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    return Store(str(tmp_path))


def _assert_one_line(e, path, field, words):
    message = str(e)
    assert "\n" not in message
    assert message.startswith(str(path) + (": %s: " % field if field else ": ")), message
    assert words in message, message


@pytest.mark.parametrize("name, data, field, words", JOURNALS, ids=[c[0] for c in JOURNALS])
def test_a_damaged_journal_is_refused_naming_the_file_and_field(tmp_path, name, data, field, words):
    store = _store(tmp_path, "journal.json", data)
    with pytest.raises(DamagedState) as e:
        store.journal.load()
    _assert_one_line(e.value, tmp_path / "journal.json", field, words)
    assert "docs/state.md" in str(e.value) and e.value.exit_code == 1


def test_a_good_journal_is_read(tmp_path):
    j = _store(tmp_path, "journal.json", _bytes(GOOD_JOURNAL)).journal.load()
    assert (j.image_id, j.mixed) == ("img-B", True)


def test_a_newer_journal_says_upgrade_not_damaged(tmp_path):
    store = _store(tmp_path, "journal.json", _bytes({"format": 2, "image_id": ["new shape"]}))
    with pytest.raises(journal.AgentError, match="newer than this agent"):
        store.journal.load()


def test_a_journal_that_is_a_directory_is_named(tmp_path):
    (tmp_path / "journal.json").mkdir()
    with pytest.raises(DamagedState, match="journal.json: cannot be read"):
        Store(str(tmp_path)).journal.load()


IMAGE_STATES = GARBAGE + [
    ("current a string", _bytes({"current": "img-A"}), "current", "is a string, not an object"),
    ("previous digest a number", _bytes({"previous": {"image_id": "a", "digest": 1}}),
     "previous.digest", "is a number"),
]


@pytest.mark.parametrize("name, data, field, words", IMAGE_STATES, ids=[c[0] for c in IMAGE_STATES])
def test_damaged_image_state_is_refused(tmp_path, name, data, field, words):
    store = _store(tmp_path, records.STATE_FILE, data)
    with pytest.raises(DamagedState) as e:
        store.records.load()
    _assert_one_line(e.value, tmp_path / records.STATE_FILE, field, words)
    assert "previous" in e.value.fix  # what moving it aside costs


REJECTED = GARBAGE + [
    ("an entry a string", _bytes({"img-B": "bad"}), "img-B", "is a string, not an object"),
    ("why a list", _bytes({"img-B": {"why": ["x"]}}), "img-B.why", "is an array"),
]


@pytest.mark.parametrize("name, data, field, words", REJECTED, ids=[c[0] for c in REJECTED])
def test_damaged_rejections_are_refused_never_forgotten(tmp_path, name, data, field, words):
    store = _store(tmp_path, "rejected.json", data)
    for read in (store.records.rejected, lambda: store.records.reject("img-C", "", "why", 1.0),
                 lambda: store.records.unreject("img-B")):
        with pytest.raises(DamagedState) as e:
            read()
        _assert_one_line(e.value, tmp_path / "rejected.json", field, words)
    assert (tmp_path / "rejected.json").read_bytes() == data, "rewritten"


DEPLOYMENTS = GARBAGE + [("a record a number", _bytes({"7:x": 3}), "7:x", "is a number")]


@pytest.mark.parametrize("name, data, field, words", DEPLOYMENTS, ids=[c[0] for c in DEPLOYMENTS])
def test_damaged_deployments_are_refused(tmp_path, name, data, field, words):
    store = _store(tmp_path, "deployments.json", data)
    with pytest.raises(DamagedState) as e:
        store.flags.deployments_done()
    _assert_one_line(e.value, tmp_path / "deployments.json", field, words)


HOLDS = GARBAGE + [("since a string", _bytes({"reason": "x", "since": "today"}), "since", "")]


@pytest.mark.parametrize("name, data, field, words", HOLDS, ids=[c[0] for c in HOLDS])
def test_a_damaged_hold_holds(tmp_path, caplog, name, data, field, words):
    held = _store(tmp_path, "hold.json", data).flags.hold()
    assert held and "hold.json is damaged" in held["reason"] and "unhold" in held["reason"]
    assert held["since"] is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(tmp_path / "hold.json") in warnings[0]


def test_a_good_hold_and_no_hold(tmp_path):
    store = Store(str(tmp_path))
    assert store.flags.hold() is None
    store.flags.set_hold("maintenance", 5.0)
    assert store.flags.hold() == {"reason": "maintenance", "since": 5.0}


STATUSES = GARBAGE + [("desired a string", _bytes({"desired": "img-B"}), "desired", ""),
                      ("last_result a list", _bytes({"last_result": []}), "last_result", "")]


@pytest.mark.parametrize("name, data, field, words", STATUSES, ids=[c[0] for c in STATUSES])
def test_a_damaged_status_file_is_ignored_with_a_warning(tmp_path, caplog, name, data, field, words):
    assert _store(tmp_path, "status.json", data).flags.load_status() == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(str(tmp_path / "status.json"))


CHANGE_LISTS = GARBAGE + [("added a string", _bytes({"added": "/etc"}), "added", "")]


@pytest.mark.parametrize("name, data, field, words", CHANGE_LISTS, ids=[c[0] for c in CHANGE_LISTS])
def test_a_damaged_change_list_is_ignored(tmp_path, name, data, field, words):
    (tmp_path / "changes").mkdir()
    (tmp_path / "changes" / "1-img-B.json").write_bytes(data)
    assert Store(str(tmp_path)).history.load_change_list("1-img-B.json") is None


def _record(image_id, **extra):
    return dict({"image_id": image_id, "result": "success", "started_at": 1.0,
                 "duration_s": 2.0, "changes": {"changed": 1}}, **extra)


def _history(tmp_path, *lines):
    (tmp_path / "history.jsonl").write_bytes(b"".join(lines))
    return Store(str(tmp_path))


def test_a_torn_last_history_line_is_skipped_unsaid(tmp_path, caplog):
    store = _history(tmp_path, _bytes(_record("img-A")) + b"\n", b'{"image_id": "img-B", "res')
    assert [r["image_id"] for r in store.history.last()] == ["img-A"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


BAD_LINES = [
    ("garbage", b"\x00\xff\xfe"),
    ("not JSON", b"{{{"),
    ("a list", b"[1, 2]"),
    ("a string", b"\"success\""),
    ("null", b"null"),
    ("duration a string", _bytes(_record("img-X", duration_s="long"))),
    ("changes a list", _bytes(_record("img-X", changes=[1]))),
    ("started_at a string", _bytes(_record("img-X", started_at="noon"))),
    ("error a number", _bytes(_record("img-X", error=1))),
]


@pytest.mark.parametrize("name, line", BAD_LINES, ids=[c[0] for c in BAD_LINES])
def test_a_bad_history_line_in_the_middle_is_skipped_with_one_warning(tmp_path, caplog, name, line):
    store = _history(tmp_path, _bytes(_record("img-A")) + b"\n", line + b"\n",
                     _bytes(_record("img-B")) + b"\n")
    assert [r["image_id"] for r in store.history.last()] == ["img-A", "img-B"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(str(tmp_path / "history.jsonl") + ": line 2:")


def test_history_keeps_its_limit_past_bad_lines(tmp_path):
    lines = [_bytes(_record("img-%d" % i)) + b"\n" for i in range(4)]
    store = _history(tmp_path, lines[0], lines[1], b"[]\n", lines[2], b"7\n", lines[3])
    assert [r["image_id"] for r in store.history.last(3)] == ["img-1", "img-2", "img-3"]


def test_a_record_appended_after_a_torn_line_starts_a_line_of_its_own(tmp_path):
    store = _history(tmp_path, _bytes(_record("img-A")) + b"\n", b'{"image_id": "img-B", "res')
    store.history.append(_record("img-C"))
    assert [r["image_id"] for r in store.history.last()] == ["img-A", "img-C"]


class _Config:
    max_image_size = 0


IMAGE_RECORDS = GARBAGE + [
    ("no digest", _bytes({"image_id": "img-B", "format": "ext4"}), "digest", "is missing"),
    ("digest a number", _bytes({"image_id": "img-B", "digest": 5, "format": "ext4"}), "digest", ""),
    ("digest of another file", _bytes({"image_id": "img-B", "digest": "sha256:../../etc/x",
                                       "format": "ext4"}), "digest", "does not match"),
    ("format a list", _bytes({"image_id": "img-B", "digest": "sha256:" + "b" * 64,
                              "format": ["ext4"]}), "format", "is an array"),
]


@pytest.mark.parametrize("name, data, field, words", IMAGE_RECORDS, ids=[c[0] for c in IMAGE_RECORDS])
def test_a_damaged_image_record_is_ignored_and_the_image_fetched_again(tmp_path, caplog, name, data,
                                                                       field, words):
    stem = tmp_path / ("sha256-" + "b" * 64)
    stem.with_suffix(".img").write_bytes(b"image")
    stem.with_suffix(".json").write_bytes(data)
    store = ImageStore(str(tmp_path), _Config(), system=None)
    assert store.staged() == [] and store.lookup("sha256:" + "b" * 64) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # one per read: staged(), lookup()
    assert warnings[0].startswith(str(stem.with_suffix(".json")) + (": %s:" % field if field else ":"))
    assert words in warnings[0] and "fetched again" in warnings[0]


def test_a_good_image_record_is_read(tmp_path):
    stem = tmp_path / ("sha256-" + "b" * 64)
    stem.with_suffix(".img").write_bytes(b"image")
    stem.with_suffix(".json").write_bytes(_bytes({"image_id": "img-B", "digest": "sha256:" + "b" * 64,
                                                  "format": "ext4", "url": "file:///x"}))
    (staged,) = ImageStore(str(tmp_path), _Config(), system=None).staged()
    assert (staged.image_id, staged.path) == ("img-B", str(stem.with_suffix(".img")))


TARGETS = GARBAGE + [
    ("targets missing", _bytes({"since": 1.0}), "targets", "is missing"),
    ("since a string", _bytes({"since": "x", "targets": []}), "since", "is a string"),
    ("a target a number", _bytes({"since": 1.0, "targets": [7]}), "targets[0]", "is a number"),
]


@pytest.mark.parametrize("name, data, field, words", TARGETS, ids=[c[0] for c in TARGETS])
def test_a_damaged_targets_file_names_no_replaced_paths(tmp_path, caplog, name, data, field, words):
    (tmp_path / live.TARGETS_FILE).write_bytes(data)
    assert live.old_code(str(tmp_path / "root"), str(tmp_path)) == ({}, None)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(tmp_path / live.TARGETS_FILE) in warnings[0]
    assert words in warnings[0]


def test_a_targets_file_with_short_pairs_keeps_the_good_ones(tmp_path):
    pin = tmp_path / "root" / ".update-agent-pinned"
    pin.mkdir(parents=True)
    (pin / "x").write_text("old code")
    ino = os.lstat(pin / "x").st_ino
    (tmp_path / live.TARGETS_FILE).write_bytes(_bytes({"since": 2.0, "targets": [[ino, "usr/bin/x"], [1]]}))
    assert live.old_code(str(tmp_path / "root"), str(tmp_path)) == ({ino: "usr/bin/x"}, 2.0)


def test_every_message_is_one_line_with_the_fix():
    e = DamagedState("/s/journal.json", "steps.sync", "is a number, not a string", "fix it")
    assert str(e) == "/s/journal.json: steps.sync: is a number, not a string; fix it"
    assert statecheck.problem({"a": [1, "x"]}, statecheck.Field(
        (dict,), shape={"a": statecheck.Field((list,), each=statecheck.Field((int,)))})) == \
        ("a[1]", "is a string, not a number")


def test_an_unreadable_account_base_is_no_base(tmp_path, caplog):
    from update_agent.node import facts
    for tree, text in (("node", "root:x:0:0::/root:/bin/sh\nop:x:1001:1001::/home/op:/bin/sh\n"),
                       ("image", "root:x:0:0::/root:/bin/sh\n")):
        (tmp_path / tree / "etc").mkdir(parents=True)
        (tmp_path / tree / "etc" / "passwd").write_text(text)
    (tmp_path / "base" / "etc_passwd").mkdir(parents=True)  # a directory where the copy was
    texts = facts.account_files(str(tmp_path / "node"), str(tmp_path / "image"),
                                base_dir=str(tmp_path / "base"))
    assert texts["etc/passwd"][2] is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(tmp_path / "base" / "etc_passwd") in warnings[0]
