"""Attempts to break the node: the failure windows and layouts a review found."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import sandbox
import world
from world import agent, plan_json, pre_configure_hook, read, write_metadata

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    return world.World(str(tmp_path_factory.mktemp("safety")))


def test_separate_boot_partition_is_not_mistaken_for_a_kernel_less_image(w, node, tmp_path):
    boot = str(tmp_path / "boot.ext4")
    sandbox.mkfs(boot, 16, tree=os.path.join(w.tree_a, "boot"))
    node.mount_image(boot, "boot")
    plan = plan_json(node.root, w.metadata_for_b(str(tmp_path)))
    assert plan["action"] == "in-place", plan["reasons"]
    assert plan["kernel"]["image"] == world.RELEASE
    assert any("same vmlinuz" in r for r in plan["reasons"]), "compared against /boot's vmlinuz"


def test_state_dir_through_a_symlink_is_never_synced_away(w, tmp_path):
    # the state dir lives on the (writable) root filesystem, reached through a link;
    # image B has no /srv, so without care the sync would delete the agent's own state
    tree = w.tree("img-A-link", image_id="img-A", release=world.RELEASE, variant="A")
    os.rmdir(os.path.join(tree, "var/lib/update-agent"))
    os.makedirs(os.path.join(tree, "srv/ua"))
    os.symlink("/srv/ua", os.path.join(tree, "var/lib/update-agent"))
    n = w.node(str(tmp_path), tree=tree, state_mount=False, read_only=False)
    try:
        meta = w.metadata_for_b(str(tmp_path))
        plan = plan_json(n.root, meta)
        assert plan["action"] == "in-place"
        assert "/srv" not in plan["changes"]["sample"]["deleted"]
        r = agent(n.root, "apply", metadata=meta)
        assert r.returncode == 0, r.stderr
        assert os.path.isfile(os.path.join(n.root, "srv/ua/journal.json"))
        assert read(n, "etc/image_id") == b"img-B\n"
    finally:
        n.stop()


def test_preserved_account_file_is_not_merged(w, node, tmp_path):
    conf = tmp_path / "a.conf"
    conf.write_text("[agent]\npreserve_extra = /etc/shadow\n")
    shadow = read(node, "etc/shadow")
    r = agent(node.root, "apply", metadata=w.metadata_for_b(str(tmp_path)), config=str(conf))
    assert r.returncode == 0, r.stderr
    assert read(node, "etc/shadow") == shadow
    assert b"newsvc:" in read(node, "etc/passwd")


def test_resume_after_the_last_step_still_ends_read_only(w, node, tmp_path):
    # killed after remount-ro was journalled done but before the journal said done,
    # then something left the root writable: the next run must not leave it so
    meta = w.metadata_for_b(str(tmp_path))
    assert agent(node.root, "apply", metadata=meta).returncode == 0
    path = os.path.join(node.root, "var/lib/update-agent/journal.json")
    j = json.load(open(path))
    j["status"] = "running"
    json.dump(j, open(path, "w"))
    subprocess.run(["mount", "-o", "remount,rw", node.root], check=True)
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 0, r.stderr
    assert "ro" in world.root_mount_options(node.root)


def test_a_stale_image_mount_from_a_killed_run_is_cleaned_up(w, node, tmp_path):
    work = os.path.join(node.root, "var/lib/update-agent/work")
    os.makedirs(os.path.join(work, "mnt-stale"))
    subprocess.run(["mount", "-t", "tmpfs", "stale", os.path.join(work, "mnt-stale")], check=True)
    plan_json(node.root, w.metadata_for_b(str(tmp_path)))
    mounted = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True).stdout
    assert work not in mounted


def test_sigterm_stops_an_apply_between_steps(w, node, tmp_path):
    meta = w.metadata_for_b(str(tmp_path))
    open(os.path.join(node.root, "run/slow-configure"), "w").close()
    env = dict(os.environ, PYTHONPATH=os.path.join(world.PROJECT, "agent"))
    proc = subprocess.Popen([sys.executable, "-m", "update_agent", "--root", node.root,
                             "--metadata", meta, "apply"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = os.path.join(node.root, "run/hooks.log")

    def in_configure():
        return os.path.exists(log) and "configure" in open(log).read().split()
    deadline = time.monotonic() + 60
    while not in_configure() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "stopped before step post-configure" in err
    assert "ro" in world.root_mount_options(node.root)
    phases = [line.split()[0] for line in open(log)]
    assert phases == ["pre-configure", "configure", "error"], "configure finished, then undo"
    os.unlink(os.path.join(node.root, "run/slow-configure"))
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 0, r.stderr
    assert [line.split()[0] for line in open(log)][3:] == ["post-configure", "migration", "health"]


def test_reboot_plan_after_a_crash_puts_the_root_back_to_read_only(w, node, tmp_path):
    meta = w.metadata_for_b(str(tmp_path))
    open(os.path.join(node.root, "run/fail-configure"), "w").close()
    assert agent(node.root, "apply", metadata=meta).returncode == 1
    subprocess.run(["mount", "-o", "remount,rw", node.root], check=True)  # as a crash would
    tree = w.tree("img-k2", image_id="img-k2", release="9.9.9-test", variant="B")
    image = w.ext4(tree, "k2")
    meta2 = write_metadata(str(tmp_path / "m2.json"), "img-k2", world.offered(tmp_path, image), world.sha256(image),
                           reboot="manual")
    r = agent(node.root, "apply", metadata=meta2)
    assert r.returncode == 1 and "reboot required" in r.stderr
    assert "partial update to img-B" in r.stderr
    assert "ro" in world.root_mount_options(node.root)


@pytest.mark.parametrize("args, words", [
    (["--root", "/nonexistent/root", "--dry-run"], ["--root", "/nonexistent/root"]),
    (["--config", "/tmp", "--dry-run"], ["--config", "/tmp"]),
])
def test_bad_arguments_exit_2(node, args, words):
    r = subprocess.run([sys.executable, "-m", "update_agent", "--root", node.root] + args,
                       capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=os.path.join(world.PROJECT, "agent")))
    assert r.returncode == 2 and all(w_ in r.stderr for w_ in words), r.stderr


def test_unparseable_url_exits_2(node, tmp_path):
    meta = write_metadata(str(tmp_path / "m.json"), "img-B", "http://[::1/x")
    r = agent(node.root, "--dry-run", metadata=meta)
    assert r.returncode == 2 and "http://[::1/x" in r.stderr and "Traceback" not in r.stderr


def test_the_replan_after_pre_configure_reuses_the_walk_of_an_unwritten_root(w, node, tmp_path):
    pre_configure_hook(node, "50-quiet", "true\n")
    r = agent(node.root, "-v", "apply", metadata=w.metadata_for_b(str(tmp_path)))
    assert r.returncode == 0, r.stderr
    assert "the walk is reused" in r.stderr
    world.assert_matches_image(node.root, w.tree_b)


def test_what_pre_configure_writes_on_the_root_is_synced_away(w, node, tmp_path):
    # a service that, while stopping, remounts the root and leaves a file in /usr:
    # the replan must walk again and see it, or the node would keep a file the image lacks
    pre_configure_hook(node, "50-scribble", 'mount -o remount,rw "$R"\n'
                        'echo left-behind > "$R/usr/share/stray-while-stopping"\n'
                        'mount -o remount,ro "$R"\n')
    r = agent(node.root, "-v", "apply", metadata=w.metadata_for_b(str(tmp_path)))
    assert r.returncode == 0, r.stderr
    assert "the walk is reused" not in r.stderr
    assert not os.path.exists(os.path.join(node.root, "usr/share/stray-while-stopping"))
    world.assert_matches_image(node.root, w.tree_b)


def test_a_write_through_another_mount_of_the_root_filesystem_is_synced_away(w, node, tmp_path):
    # the root is mounted read-only, but its filesystem stays writable through a bind
    # mount elsewhere (a container's volume, say): the replan cannot trust the first walk
    other = str(tmp_path / "other")
    os.mkdir(other)
    pre_configure_hook(node, "50-scribble", 'echo left-behind > "%s/usr/share/stray-elsewhere"\n' % other)
    subprocess.run(["mount", "-o", "remount,rw", node.root], check=True)
    subprocess.run(["mount", "--bind", node.root, other], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", node.root], check=True)
        r = agent(node.root, "-v", "apply", metadata=w.metadata_for_b(str(tmp_path)))
    finally:
        subprocess.run(["umount", other], check=True)
    assert r.returncode == 0, r.stderr
    assert "the walk is reused" not in r.stderr
    assert not os.path.exists(os.path.join(node.root, "usr/share/stray-elsewhere"))
    world.assert_matches_image(node.root, w.tree_b)


def test_a_root_unwritten_since_its_last_walk_is_not_walked_again_until_it_is_written(
        w, node, tmp_path):
    meta = w.metadata_for_b(str(tmp_path))
    first = agent(node.root, "-v", "--dry-run", "--json", metadata=meta)
    assert first.returncode == 0 and "no walk" not in first.stderr, first.stderr
    second = agent(node.root, "-v", "--dry-run", "--json", metadata=meta)
    assert second.returncode == 0 and "no walk" in second.stderr, second.stderr
    assert json.loads(second.stdout)["changes"] == json.loads(first.stdout)["changes"]
    with world.writable(node.root):  # a write: remounted read-write, then read-only again
        with open(os.path.join(node.root, "usr/share/stray"), "w") as f:
            f.write("written\n")
    third = agent(node.root, "-v", "--dry-run", "--json", metadata=meta)
    assert third.returncode == 0 and "no walk" not in third.stderr, third.stderr
    assert "/usr/share/stray" in json.loads(third.stdout)["changes"]["sample"]["deleted"]


def test_a_volume_mounted_by_pre_configure_is_left_alone(w, node, tmp_path):
    # a hook that, while quiescing, mounts volumes where image B changes a library
    # and deletes a directory: the sync must neither write into them nor empty them
    pre_configure_hook(node, "50-volumes", world.MOUNT_VOLUMES)
    try:
        r = agent(node.root, "-v", "apply", metadata=w.metadata_for_b(str(tmp_path)))
        assert r.returncode == 0, r.stderr
        world.assert_volumes_untouched(node.root)
        assert "mounted under the root since the plan began: /usr/lib/app, /usr/share/app-old/sub" in r.stderr
    finally:
        world.unmount_volumes(node.root)
    assert read(node, "etc/image_id") == b"img-B\n"
