"""Capacity: a root or state dir short of inodes or bytes is refused at plan time,
and a sync that runs out part-way anyway fails, says the root is mixed, and the
next run converges."""

import json
import os
import re
import shutil
import subprocess

import pytest

import sandbox
import world
from world import agent, read, write_metadata

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]

NO_MARGIN = "[agent]\nfree_space_margin = 0\n"

ADDED = 600  # one-byte files image B adds: few bytes, many inodes


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    return world.World(str(tmp_path_factory.mktemp("capacity")))


@pytest.fixture(scope="module")
def many(w):
    """(tree, image) of an image that adds ADDED small files to B."""
    tree = w.tree("img-many", image_id="img-many", release=world.RELEASE, variant="B")
    bulk = os.path.join(tree, "usr/share/many")
    if not os.path.isdir(bulk):
        os.makedirs(bulk)
        for i in range(ADDED):
            with open(os.path.join(bulk, "f%d" % i), "w") as f:
                f.write("x")
        sandbox._clamp(tree)
    image = w.ext4(tree, "many")
    return tree, image


def many_meta(many, tmp_path):
    """The metadata of the many-files image, offered to the test's node."""
    return write_metadata(str(tmp_path / "many.json"), "img-many",
                          world.offered(tmp_path, many[1]), world.sha256(many[1]))


def conf(tmp_path):
    path = tmp_path / "agent.conf"
    path.write_text(NO_MARGIN)
    return str(path)


def small_root(tmp_path, w, inodes=None, size_mb=32):
    img = str(tmp_path / "root.ext4")
    argv = ["mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-d", w.tree_a]
    argv += ["-N", str(inodes)] if inodes else []
    subprocess.run(argv + [img, "%dM" % size_mb], check=True, capture_output=True)
    return sandbox.SandboxNode(str(tmp_path / "node"), img).start()


def errors(stderr):
    return [ln for ln in stderr.splitlines() if ln.strip() and ": WARNING: " not in ln]


def assert_refused_unchanged(n, run, *words):
    """A refusal: exit 1 (the node cannot take it), one error line naming the numbers."""
    before = world.snapshot(n.root)
    r = run()
    assert r.returncode == 1 and "refused to apply" in r.stderr, r.stderr
    assert len(errors(r.stderr)) == 1, r.stderr
    assert all(word in r.stderr for word in words), r.stderr
    assert world.snapshot(n.root) == before, "the root changed"
    assert read(n, "etc/image_id") == b"img-A\n"
    assert "ro" in world.root_mount_options(n.root)
    return r


def test_a_root_short_of_inodes_is_refused_with_the_numbers(w, many, tmp_path):
    # the known attack: enough bytes, too few inodes; once new binaries, old image_id
    n = small_root(tmp_path, w, inodes=200)
    try:
        free = os.statvfs(n.root).f_ffree
        assert free < ADDED
        run = lambda: agent(n.root, "apply", metadata=many_meta(many, tmp_path), config=conf(tmp_path))  # noqa: E731
        r = assert_refused_unchanged(n, run, "not enough free inodes on the root %s" % n.root,
                                     "have %d" % free)
        # every path B adds (the bulk, its directory and B's own), and a margin of 64
        added = int(re.search(r"need \d+ inodes \((\d+) added paths", r.stderr).group(1))
        assert added >= ADDED + 1 and "need %d inodes" % (added + 64) in r.stderr, r.stderr
    finally:
        n.stop()


def test_a_state_dir_short_of_inodes_is_refused_naming_it(w, tmp_path):
    n = w.node(str(tmp_path), state_mount=False)
    state_img = str(tmp_path / "tiny-state.ext4")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-N", "2048", state_img, "160M"], check=True,
                   capture_output=True)
    state = os.path.join(n.root, "var/lib/update-agent")
    n._mount(n._loop(state_img), state)
    n.mount_offer_dir()  # the images copied onto the node live on the state volume
    try:
        # the staged image fits, with the stage margins to spare; then the inodes are used up
        r = agent(n.root, "check", metadata=w.metadata_for_b(str(tmp_path)))
        assert r.returncode == 0, r.stderr
        fill = os.path.join(state, "filler")
        os.makedirs(fill, exist_ok=True)
        # all but 4: the image's mount point in work/ needs one before the plan
        for i in range(os.statvfs(state).f_ffree - 4):
            open(os.path.join(fill, str(i)), "w").close()
        free = os.statvfs(state).f_ffree
        assert_refused_unchanged(n, lambda: agent(n.root, "apply",
                                                  metadata=w.metadata_for_b(str(tmp_path))),
                                 "not enough free inodes on the state dir", state,
                                 "have %d" % free)
    finally:
        n.stop()


def assert_mixed_then_converges(n, tree, meta, env, words, free_room, config):
    r = agent(n.root, "apply", metadata=meta, env=env, config=config)
    assert r.returncode == 1 and "step sync failed" in r.stderr, r.stderr
    assert all(word in r.stderr for word in words), r.stderr
    assert read(n, "etc/image_id") == b"img-A\n", "not committed"
    assert "ro" in world.root_mount_options(n.root)
    assert os.path.exists(os.path.join(n.root, "usr/share/many/f0")), "the sync wrote part of B"
    status = agent(n.root, "status")
    assert "content:  mixed: holds part of image img-many over img-A; step sync failed: " \
           "rsync" in status.stdout, status.stdout
    st = json.loads(agent(n.root, "status", "--json").stdout)
    assert st["history"][-1]["root"].startswith("mixed: holds part of image img-many over img-A")
    assert st["history"][-1]["step"] == "sync"
    # the room comes back; the next run resumes and the root equals B
    free_room()
    r = agent(n.root, "apply", metadata=meta, config=config)
    assert r.returncode == 0, r.stderr
    world.assert_matches_image(n.root, tree)
    st = json.loads(agent(n.root, "status", "--json").stdout)
    assert st["unfinished_update"] is None and "root" not in st["history"][-1]


def _freed(n, action):
    with world.writable(n.root):
        action()


def test_inodes_running_out_during_the_sync_leave_a_mixed_root_that_converges(w, many, tmp_path):
    n = small_root(tmp_path, w, inodes=2000)
    try:
        # /var/tmp is preserved: the node's own files take all but 100 inodes
        env = world.wrapped_tool(tmp_path, "rsync", before='mkdir -p "$R/var/tmp/fill"; n=$(stat -f -c %d "$R"); '
                                     'i=100; while [ $i -lt $n ]; do : > "$R/var/tmp/fill/$i"; '
                                     'i=$((i+1)); done')
        assert_mixed_then_converges(
            n, many[0], many_meta(many, tmp_path), env, ["No space left"],
            lambda: _freed(n, lambda: shutil.rmtree(os.path.join(n.root, "var/tmp/fill"))),
            conf(tmp_path))
    finally:
        n.stop()


def test_bytes_running_out_during_the_sync_leave_a_mixed_root_that_converges(w, many, tmp_path):
    n = small_root(tmp_path, w, size_mb=32)
    try:
        env = world.wrapped_tool(tmp_path, "rsync", before='fallocate -l $(( $(stat -f -c "%f * %S" "$R") - 65536 )) '
                                     '"$R/var/tmp/filler" 2>/dev/null || '
                                     'dd if=/dev/zero of="$R/var/tmp/filler" bs=1M 2>/dev/null; true')
        assert_mixed_then_converges(
            n, many[0], many_meta(many, tmp_path), env, ["No space left"],
            lambda: _freed(n, lambda: os.unlink(os.path.join(n.root, "var/tmp/filler"))),
            conf(tmp_path))
    finally:
        n.stop()
