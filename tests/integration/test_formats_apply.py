"""An in-place update from each image format the store accepts, end to end."""

import json
import os

import pytest

import imagebuild
import world
from world import agent, write_metadata

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]

CASES = [
    ("ext4", {}), ("xfs", {}), ("squashfs", {}),
    ("rawdisk", {"table": "gpt", "root_label": "cloudimg-rootfs"}),
    ("rawdisk", {"table": "dos", "root_label": None}),
    ("qcow2", {"root_label": "img-rootfs"}),
    ("tar", {}), ("tar.gz", {}), ("tar.zst", {}),
]


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    return world.World(str(tmp_path_factory.mktemp("formats")))


@pytest.mark.parametrize("fmt, options", CASES, ids=["%s-%d" % (c[0], i) for i, c in enumerate(CASES)])
def test_update_from_format(w, tmp_path, fmt, options):
    image = str(tmp_path / ("B." + fmt))
    imagebuild.build_image(w.tree_b, fmt, image, **options)
    meta = write_metadata(str(tmp_path / "m.json"), "img-B", world.offered(tmp_path, image), world.sha256(image))
    # an xfs image is at least 300 MB: give the state filesystem room to cache it
    n = w.node(str(tmp_path), state_mb=1024 if fmt == "xfs" else 256)
    try:
        r = agent(n.root, "apply", "--json", metadata=meta)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["result"] == "success"
        world.assert_matches_image(n.root, w.tree_b)
        assert "ro" in world.root_mount_options(n.root)
        work = os.path.join(n.root, "var/lib/update-agent/work")
        assert [e for e in os.listdir(work) if os.path.isdir(os.path.join(work, e))] == [], \
            "temp trees left behind"
    finally:
        n.stop()
    assert world.loops_for(image) == ""


def test_update_from_directory(w, tmp_path):
    n = w.node(str(tmp_path))
    try:
        meta = write_metadata(str(tmp_path / "m.json"), "img-B", "file://" + w.tree_b)
        r = agent(n.root, "apply", metadata=meta, config=_dir_conf(tmp_path, w))
        assert r.returncode == 2 and "require_digest" in r.stderr, "a digest is required by default"
        plan = json.loads(agent(n.root, "--dry-run", "--json", metadata=meta,
                                config=_no_digest_conf(tmp_path, w)).stdout)
        # a directory's digest is the digest of its manifest: pin it and apply
        meta = write_metadata(str(tmp_path / "m.json"), "img-B", "file://" + w.tree_b, plan["digest"])
        r = agent(n.root, "apply", metadata=meta)
        assert r.returncode == 2 and "directory_images" in r.stderr, "not without the config's leave"
        r = agent(n.root, "apply", metadata=meta, config=_dir_conf(tmp_path, w))
        assert r.returncode == 0, r.stderr
        world.assert_matches_image(n.root, w.tree_b)
    finally:
        n.stop()


def _no_digest_conf(tmp_path, w):
    conf = tmp_path / "nodigest.conf"
    conf.write_text("[agent]\nrequire_digest = false\ndirectory_images = %s\n" % w.base)
    return str(conf)


def _dir_conf(tmp_path, w):
    conf = tmp_path / "dir.conf"
    conf.write_text("[agent]\ndirectory_images = %s\n" % w.base)
    return str(conf)
