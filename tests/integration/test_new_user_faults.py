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
    assert "desired:  img-B" in r.stdout


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


@pytest.mark.parametrize("tool", ["test", "demo"])
def test_the_tools_say_what_is_wrong_where_root_is_not_a_mount_point(tool, tmp_path):
    # a container whose / is a plain directory: a chroot into one, with /usr bound in
    import os
    import subprocess
    jail = tmp_path / "jail"
    for d in ("usr", "wt/tools", "tmp", "dev"):
        (jail / d).mkdir(parents=True)
    for d in ("bin", "lib", "lib64", "sbin"):
        if os.path.islink("/" + d):
            os.symlink(os.readlink("/" + d), str(jail / d))
    binds = [("/usr", jail / "usr"), (os.path.join(world.PROJECT, "tools"), jail / "wt/tools")]
    for src, dst in binds:
        subprocess.run(["mount", "--bind", src, str(dst)], check=True)
    try:
        r = subprocess.run(["chroot", str(jail), "/bin/sh", "/wt/tools/" + tool],
                           capture_output=True, text=True, timeout=60)
    finally:
        for _, dst in reversed(binds):
            subprocess.run(["umount", str(dst)], check=True)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert "needs a private mount namespace, and here / is not a mount point" in r.stderr
    assert "cannot change root filesystem propagation" not in r.stderr
