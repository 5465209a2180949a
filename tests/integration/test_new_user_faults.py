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
