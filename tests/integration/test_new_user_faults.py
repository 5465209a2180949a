"""Small faults a new user meets: noise in the log, what status and config print."""

import json

import pytest

import world
from world import agent, pre_configure_hook, read

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]

WARNING = "mounted under the root since the plan began"


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    return world.World(str(tmp_path_factory.mktemp("newuser")))


def test_the_agents_own_image_mount_is_not_reported_as_foreign(w, node, tmp_path):
    # image B is an ext4 file: the agent mounts it in its work dir, below the root
    r = agent(node.root, "-v", "apply", metadata=w.metadata_for_b(str(tmp_path)))
    assert r.returncode == 0, r.stderr
    assert WARNING not in r.stderr
    assert read(node, "etc/image_id") == b"img-B\n"


def test_a_volume_mounted_by_pre_configure_is_reported_once(w, node, tmp_path):
    pre_configure_hook(node, "50-volumes", world.MOUNT_VOLUMES)
    try:
        r = agent(node.root, "-v", "apply", metadata=w.metadata_for_b(str(tmp_path)))
        assert r.returncode == 0, r.stderr
        world.assert_volumes_untouched(node.root)
    finally:
        world.unmount_volumes(node.root)
    warnings = [line for line in r.stderr.splitlines() if WARNING in line]
    assert len(warnings) == 1, warnings
    assert "%s: /usr/lib/app, /usr/share/app-old/sub;" % WARNING in warnings[0]


def test_status_after_an_apply_with_metadata_does_not_blame_the_daemon(w, node, tmp_path):
    r = agent(node.root, "apply", metadata=w.metadata_for_b(str(tmp_path)))
    assert r.returncode == 0, r.stderr
    r = agent(node.root, "status")
    assert r.returncode == 0, r.stderr
    assert "image:    img-B (previous: img-A)" in r.stdout
    assert "has not seen metadata" not in r.stdout
    assert "the daemon has not run on this root" in r.stdout


def test_status_says_a_root_without_image_id_was_not_deployed_from_an_image(w, tmp_path):
    import os
    tree = w.tree("no-image-id", image_id="img-A", release=world.RELEASE, variant="A")
    if os.path.exists(os.path.join(tree, "etc/image_id")):
        os.unlink(os.path.join(tree, "etc/image_id"))
    n = w.node(str(tmp_path), tree=tree)
    try:
        r = agent(n.root, "status")
        assert r.returncode == 0, r.stderr
        assert "not deployed from an image (it has no /etc/image_id" in r.stdout
    finally:
        n.stop()


def test_status_json_is_unchanged_by_the_wording(w, node):
    r = agent(node.root, "status", "--json")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert obj["current_image_id"] == "img-A" and obj["desired_image_id"] == ""
