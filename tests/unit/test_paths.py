"""paths.resolve_in_root: node paths resolve inside the root, like a chroot."""

import os

import pytest

from update_agent.node.paths import NodePaths, resolve_in_root
from update_agent.reboot import steps as rebooting


@pytest.fixture
def root(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "var").mkdir()
    (tmp_path / "usr/lib").mkdir(parents=True)
    os.symlink("/run", tmp_path / "var/run")
    os.symlink("usr/lib", tmp_path / "lib")
    return str(tmp_path)


def test_absolute_symlink_resolves_inside_the_root(root):
    assert resolve_in_root(root, "/var/run/os-refresh-config.lock") == \
        os.path.join(root, "run/os-refresh-config.lock")


def test_relative_symlink(root):
    assert resolve_in_root(root, "/lib/modules") == os.path.join(root, "usr/lib/modules")


def test_dotdot_cannot_climb_above_the_root(root):
    assert resolve_in_root(root, "/../../etc/passwd") == os.path.join(root, "etc/passwd")
    assert resolve_in_root(root, "/var/../../../run") == os.path.join(root, "run")


def test_symlink_with_dotdot_cannot_escape(root):
    os.symlink("../../../../../../etc", os.path.join(root, "var/escape"))
    assert resolve_in_root(root, "/var/escape/shadow") == os.path.join(root, "etc/shadow")


def test_symlink_loop_raises(root):
    os.symlink("b", os.path.join(root, "a"))
    os.symlink("a", os.path.join(root, "b"))
    with pytest.raises(OSError):
        resolve_in_root(root, "/a/x")


def test_missing_components_are_appended(root):
    assert resolve_in_root(root, "/var/lib/update-agent/journal.json") == \
        os.path.join(root, "var/lib/update-agent/journal.json")
    assert resolve_in_root(root, "/var/run/missing/x") == os.path.join(root, "run/missing/x")


def test_the_boot_id_is_read_through_the_roots_proc(tmp_path):
    # the reboot path tells "still the same boot" by it: never this machine's under a sandbox
    paths = NodePaths(str(tmp_path))
    assert paths.boot_id_file == str(tmp_path / "proc/sys/kernel/random/boot_id")
    assert rebooting.current_boot_id(paths) == ""
    (tmp_path / "proc/sys/kernel/random").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/random/boot_id").write_text("f00d\n")
    assert rebooting.current_boot_id(paths) == "f00d"
