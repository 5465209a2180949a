"""Hard conditions: a disk that fills up during the sync, a full image store,
metadata that changes in the middle of an update, two agents at once."""

import json
import os
import subprocess
import sys

import pytest

import sandbox
import world
from world import agent, read, write_metadata

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    return world.World(str(tmp_path_factory.mktemp("hard")))


def test_disk_full_during_the_sync_fails_cleanly_then_converges(w, tmp_path):
    # B adds 3,000 one-byte files: 3 kB by the plan's count, 12 MB of blocks and inodes
    tree = w.tree("img-many", image_id="img-many", release=world.RELEASE, variant="B")
    many = os.path.join(tree, "usr/share/many")
    os.makedirs(many, exist_ok=True)
    for i in range(3000):
        with open(os.path.join(many, "f%d" % i), "w") as f:
            f.write("x")
    image = w.ext4(tree, "many")
    meta = write_metadata(str(tmp_path / "m.json"), "img-many", world.offered(tmp_path, image), world.sha256(image))
    root_img = str(tmp_path / "small.ext4")
    sandbox.mkfs(root_img, 32, tree=w.tree_a)
    n = sandbox.SandboxNode(str(tmp_path / "node"), root_img).start()
    conf = tmp_path / "a.conf"
    conf.write_text("[agent]\nfree_space_margin = 0\n")
    filler = os.path.join(n.root, "var/tmp/filler")
    try:
        # the node's own data fills the root but for 1 MB (/var/tmp is preserved)
        subprocess.run(["mount", "-o", "remount,rw", n.root], check=True)
        free = os.statvfs(n.root).f_bavail * os.statvfs(n.root).f_frsize
        with open(filler, "wb") as f:
            f.write(b"\1" * (free - (1 << 20)))
        subprocess.run(["mount", "-o", "remount,ro", n.root], check=True)
        preserved = {rel: read(n, rel) for rel in world.PRESERVED_FILES}
        r = agent(n.root, "apply", metadata=meta, config=str(conf))
        assert r.returncode == 1 and "sync" in r.stderr and "No space left" in r.stderr, r.stderr
        assert read(n, "etc/image_id") == b"img-A\n", "not committed"
        assert "ro" in world.root_mount_options(n.root)
        assert {rel: read(n, rel) for rel in world.PRESERVED_FILES} == preserved
        assert os.path.getsize(filler) > 0, "the node's data is never touched"
        # the operator frees space; the next run resumes and converges
        subprocess.run(["mount", "-o", "remount,rw", n.root], check=True)
        os.unlink(filler)
        subprocess.run(["mount", "-o", "remount,ro", n.root], check=True)
        r = agent(n.root, "apply", metadata=meta, config=str(conf))
        assert r.returncode == 0, r.stderr
        world.assert_matches_image(n.root, tree)
    finally:
        n.stop()


def test_a_full_image_store_is_a_clear_error(w, tmp_path):
    tree = w.tree("img-big", image_id="img-big", release=world.RELEASE, variant="B")
    with open(os.path.join(tree, "usr/share/big.bin"), "wb") as f:
        f.write(os.urandom(24 << 20))  # data, not zeros: the store cannot keep it sparse
    image = w.ext4(tree, "big")
    meta = write_metadata(str(tmp_path / "m.json"), "img-big", world.offered(tmp_path, image), world.sha256(image))
    n = w.node(str(tmp_path), state_mb=8)
    try:
        before = world.snapshot(n.root)
        r = agent(n.root, "apply", metadata=meta)
        # the image's size is known before the download: refused with the numbers
        assert r.returncode == 1 and "not enough room to stage the image" in r.stderr, r.stderr
        assert "images" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert world.snapshot(n.root) == before
        assert not os.listdir(os.path.join(n.root, "var/lib/update-agent/images"))
    finally:
        n.stop()


def test_metadata_changing_mid_update_converges_to_the_latest(w, tmp_path):
    n = w.node(str(tmp_path))
    try:
        # the update to B stops in configure (after the commit) ...
        open(os.path.join(n.root, "run/fail-configure"), "w").close()
        assert agent(n.root, "apply", metadata=w.metadata_for_b(str(tmp_path))).returncode == 1
        os.unlink(os.path.join(n.root, "run/fail-configure"))
        # ... and the metadata now says C
        tree_c = w.tree("img-C", image_id="img-C", release=world.RELEASE, variant="B")
        with open(os.path.join(tree_c, "usr/share/doc/app/README"), "w") as f:
            f.write("C\n")
        image = w.ext4(tree_c, "C")
        meta_c = write_metadata(str(tmp_path / "c.json"), "img-C", world.offered(tmp_path, image),
                                world.sha256(image))
        plan = world.plan_json(n.root, meta_c)
        assert any("superseded by img-C" in r for r in plan["reasons"])
        r = agent(n.root, "apply", metadata=meta_c)
        assert r.returncode == 0, r.stderr
        world.assert_matches_image(n.root, tree_c)
        status = json.loads(agent(n.root, "status", "--json").stdout)
        assert status["current_image_id"] == "img-C" and status["previous_image_id"] == "img-B"
    finally:
        n.stop()


def test_two_agents_started_at_once(w, tmp_path):
    n = w.node(str(tmp_path))
    try:
        meta = w.metadata_for_b(str(tmp_path))
        env = dict(os.environ, PYTHONPATH=os.path.join(world.PROJECT, "agent"))
        argv = [sys.executable, "-m", "update_agent", "--root", n.root, "--metadata", meta, "apply"]
        procs = [subprocess.Popen(argv, env=env, text=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) for _ in range(2)]
        results = [(p.wait(timeout=300), p.stdout.read()) for p in procs]
        # one updates; the other waits for its lock, then finds nothing left to do
        assert [code for code, _ in results] == [0, 0], results
        assert sorted("plan: noop" in out for _, out in results) == [False, True], results
        history = json.loads(agent(n.root, "history", "--json").stdout)
        assert [h["result"] for h in history] == ["success"]
        world.assert_matches_image(n.root, w.tree_b)
        assert "ro" in world.root_mount_options(n.root)
    finally:
        n.stop()
