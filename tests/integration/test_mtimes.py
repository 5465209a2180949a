"""After an update the node has the image's mtimes too, not only its bytes:
content-identical paths are touched (a metadata-only change, no copy), and the
directories the sync wrote into get the image's times last."""

import os
import subprocess

import pytest

import sandbox
import world
from world import agent, plan_json, write_metadata

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]

# paths whose bytes are the same in A and B: B gives them other mtimes
RETIMED = {"usr/share/doc/app/README": 1000, "usr/share/zoneinfo/UTC": 2000,
           "etc/localtime": 3000,          # a symlink: its own mtime
           "usr/share/doc": 4000,          # a directory nothing is written into
           "usr/bin/su-helper": 5000,      # setuid: the touch keeps the mode
           "usr/share": 6000}              # a directory the sync writes into (app-new, app-old)


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    return world.World(str(tmp_path_factory.mktemp("mtimes")))


@pytest.fixture(scope="module")
def retimed(w):
    tree = w.tree("img-mt", image_id="img-mt", release=world.RELEASE, variant="B")
    for rel, offset in RETIMED.items():
        t = sandbox.EPOCH + offset
        os.utime(os.path.join(tree, rel), (t, t), follow_symlinks=False)
    return tree, w.ext4(tree, "img-mt")


def itemized(image_tree, root):
    """What rsync would still change on the node to make it the image (a dry run)."""
    argv = ["rsync", "-n", "-aHAX", "--numeric-ids", "--itemize-changes", "--delete"]
    for rel in world.NOT_FROM_IMAGE:
        argv += ["--exclude=/" + rel]
    out = subprocess.run(argv + [image_tree + "/", root + "/"], capture_output=True, text=True,
                         check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def image_root_mtime(image):
    """The mtime of the image filesystem's root directory (mkfs -d does not copy the tree's)."""
    out = subprocess.run(["debugfs", "-R", "stat /", image], capture_output=True, text=True,
                         check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("mtime:"))
    return int(line.split()[1].split(":")[0], 16)


def test_after_an_update_rsync_finds_nothing_to_change_not_even_a_time(w, node, tmp_path, retimed):
    tree, image = retimed
    meta = write_metadata(str(tmp_path / "m.json"), "img-mt", world.offered(tmp_path, image), world.sha256(image))
    assert itemized(tree, node.root), \
        "the test pair must differ in more than the node's own paths"
    before = {rel: os.lstat(os.path.join(node.root, rel)).st_ino for rel in RETIMED}

    plan = plan_json(node.root, meta)
    touched = plan["changes"]["sample"]["touched"]
    for rel in ("usr/share/doc/app/README", "usr/share/zoneinfo/UTC", "etc/localtime",
                "usr/share/doc", "usr/bin/su-helper", "usr/share"):
        assert "/" + rel in touched, touched
    assert plan["changes"]["touched"] >= len(RETIMED)
    b_plan_bytes = plan["changes"]["bytes"]
    assert any("touched" in r for r in plan["reasons"])

    r = agent(node.root, "apply", "--json", metadata=meta)
    assert r.returncode == 0, r.stderr
    left = itemized(tree, node.root)  # /etc too: the commit writes there after the sync
    # the root's time is the image filesystem's root's, which is not the tree's
    assert int(os.stat(node.root).st_mtime) == image_root_mtime(image)
    left = [ln for ln in left if ln != ".d..t...... ./"]
    assert left == [], "rsync still finds differences: %s" % left[:10]
    # a touch is no copy: the same inodes, and no more bytes than the changed content
    after = {rel: os.lstat(os.path.join(node.root, rel)).st_ino for rel in RETIMED}
    assert after == before
    assert os.stat(os.path.join(node.root, "usr/bin/su-helper")).st_mode & 0o4000
    assert b_plan_bytes < 4096
    assert "ro" in world.root_mount_options(node.root)


def test_a_python_cache_stays_fresh_after_an_update(w, tmp_path):
    # the new image's .pyc records its .py's mtime; the node's .py has the same bytes
    a = w.tree("img-py-a", image_id="img-A", release=world.RELEASE, variant="A")
    b = w.tree("img-py-b", image_id="img-py", release=world.RELEASE, variant="B")
    for tree, when in ((a, sandbox.EPOCH), (b, sandbox.EPOCH + 86400)):
        path = os.path.join(tree, "usr/lib/python3/dist-packages/mod.py")
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write("VALUE = 1\n")
            os.utime(path, (when, when))
    image = w.ext4(b, "img-py")
    n = w.node(str(tmp_path), tree=a)
    try:
        meta = write_metadata(str(tmp_path / "m.json"), "img-py", world.offered(tmp_path, image),
                              world.sha256(image))
        r = agent(n.root, "apply", metadata=meta)
        assert r.returncode == 0, r.stderr
        st = os.stat(os.path.join(n.root, "usr/lib/python3/dist-packages/mod.py"))
        assert st.st_mtime == sandbox.EPOCH + 86400, "a .pyc built against the image is stale"
    finally:
        n.stop()
