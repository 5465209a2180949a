"""The reboot path on sandbox nodes. With a --root other than / the agent never
reboots this machine: it records the reboot it would have made, and its next
run checks the node as after that reboot (the running kernel is this
machine's, so a planned kernel of the same name counts as booted, another
name as a boot that came back on the old kernel)."""

import contextlib
import json
import os
import subprocess

import pytest

import world
from update_agent.coordination import RebootSlots, stores
from world import agent, plan_json, write_metadata

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]
K = world.RELEASE


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    w = world.World(str(tmp_path_factory.mktemp("reboot")))
    # same name, another build: a reboot, after which the "new" kernel runs
    w.rebuilt = w.ext4(w.tree("img-R", image_id="img-R", release=K, variant="B", kernel_build=2), "R")
    # another version: the node comes back on the old kernel
    w.other = w.ext4(w.tree("img-N", image_id="img-N", release="9.9.9-test", variant="B"), "N")
    # with an initramfs, as Debian's kernels have: a node on build 1, an image of build 2
    w.tree_ai = w.tree("A-initrd", image_id="img-A", release=K, initrd=True)
    w.rebuilt_i = w.ext4(w.tree("img-RI", image_id="img-RI", release=K, variant="B",
                                kernel_build=2, initrd=True), "RI")
    return w


PREV = K + ".update-agent-prev"


def read(n, rel):
    with open(os.path.join(n.root, rel)) as f:
        return f.read()


@contextlib.contextmanager
def booted(n, vmlinuz):
    """The node as GRUB booted it from /boot/<vmlinuz>: /proc (a mount point, as on
    any node) with the cmdline the kernel got, BOOT_IMAGE= first."""
    proc = os.path.join(n.root, "proc")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "proc-stand-in", proc], check=True)
    try:
        with open(os.path.join(proc, "cmdline"), "w") as f:
            f.write("BOOT_IMAGE=/boot/%s root=LABEL=cloudimg-rootfs ro\n" % vmlinuz)
        yield
    finally:
        subprocess.run(["umount", proc], check=True)


def meta(tmp_path, image_id, image, **extra):
    return write_metadata(str(tmp_path / ("%s.json" % image_id)), image_id, world.offered(tmp_path, image),
                          world.sha256(image), **extra)


def hooks_log(n):
    with open(os.path.join(n.root, "run/hooks.log")) as f:
        return [line.split()[0] for line in f]


def history(n):
    return json.loads(agent(n.root, "history", "--json").stdout)


def slot_group(tmp_path, extra=""):
    """A one-slot group "ctl" in a file store: the agent's config file, and a way to
    act on the group as another node (node id -> RebootSlots)."""
    url = "file://%s" % (tmp_path / "slots")
    conf = tmp_path / "a.conf"
    conf.write_text("[coordination]\nbackend = %s\ngroup = ctl\nmax_holders = 1\n%s" % (url, extra))
    return str(conf), lambda node_id: RebootSlots(stores.for_url(url), "ctl", 1, node_id, lambda: 0)


def test_reboot_is_recorded_then_checked_and_finished(w, node, tmp_path):
    m = meta(tmp_path, "img-R", w.rebuilt)
    assert plan_json(node.root, m)["action"] == "reboot"
    r = agent(node.root, "apply", "--json", metadata=m)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["result"] == "rebooting"
    assert "did not run `systemctl reboot`" in r.stderr, "under --root it records, never reboots"
    assert open(os.path.join(node.root, "etc/image_id")).read() == "img-R\n"
    assert "ro" in world.root_mount_options(node.root)
    assert hooks_log(node) == ["pre-configure", "bootloader"]
    status = json.loads(agent(node.root, "status", "--json").stdout)
    assert status["unfinished_update"]["step"] == "boot-check"

    plan = plan_json(node.root, m)
    assert plan["action"] == "reboot" and any("checks are due" in x for x in plan["reasons"])
    r = agent(node.root, "apply", "--json", metadata=m)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["result"] == "success"
    assert hooks_log(node)[2:] == ["configure", "post-configure", "migration", "health", "bootloader"]
    world.assert_matches_image(node.root, w.tree("img-R"))
    assert "ro" in world.root_mount_options(node.root)
    assert [h["result"] for h in history(node)] == ["rebooting", "success"]
    assert plan_json(node.root, m)["action"] == "noop"


@pytest.fixture
def node_i(w, tmp_path):
    """A node on image A's kernel build 1 with its initramfs."""
    n = w.node(str(tmp_path), tree=w.tree_ai)
    yield n
    n.stop()


def rebooted_into_a_same_name_rebuild(w, n, tmp_path):
    """Apply img-RI (kernel K, build 2) on n, booted from /boot/vmlinuz-K: its plan."""
    m = meta(tmp_path, "img-RI", w.rebuilt_i)
    with booted(n, "vmlinuz-" + K):
        plan = plan_json(n.root, m)
        r = agent(n.root, "apply", "--json", metadata=m)
    assert r.returncode == 0 and json.loads(r.stdout)["result"] == "rebooting", r.stderr
    return m, plan


def test_a_same_name_rebuild_keeps_a_copy_of_the_running_build_until_the_new_one_is_proven(
        w, node_i, tmp_path):
    m, plan = rebooted_into_a_same_name_rebuild(w, node_i, tmp_path)
    assert plan["action"] == "reboot" and plan["kernel"] == {"running": K, "image": K}
    assert plan["fallback"] == {"kernel": PREV, "copies": [
        ["/boot/vmlinuz-" + K, "/boot/vmlinuz-" + PREV],
        ["/boot/initrd.img-" + K, "/boot/initrd.img-" + PREV]]}, plan["fallback"]
    # the sync replaced the running build's files; its copy has a name GRUB lists apart
    assert read(node_i, "boot/vmlinuz-" + K) == "kernel %s build 2\n" % K
    assert read(node_i, "boot/initrd.img-" + K) == "initramfs %s build 2\n" % K
    assert read(node_i, "boot/vmlinuz-" + PREV) == "kernel %s build 1\n" % K
    assert read(node_i, "boot/initrd.img-" + PREV) == "initramfs %s build 1\n" % K
    assert os.stat(os.path.join(node_i.root, "boot/vmlinuz-" + PREV)).st_mode & 0o7777 == \
        os.stat(os.path.join(w.tree_ai, "boot/vmlinuz-" + K)).st_mode & 0o7777
    assert "ro" in world.root_mount_options(node_i.root)

    # "after the reboot" GRUB booted the new build: proven, the copy goes
    with booted(node_i, "vmlinuz-" + K):
        r = agent(node_i.root, "apply", "--json", metadata=m)
    assert r.returncode == 0 and json.loads(r.stdout)["result"] == "success", r.stderr
    boot = os.listdir(os.path.join(node_i.root, "boot"))
    assert not [b for b in boot if b.endswith(".update-agent-prev")], boot
    world.assert_matches_image(node_i.root, w.tree("img-RI"))


def test_a_same_name_rebuild_that_came_back_on_the_copy_is_a_failed_boot(w, node_i, tmp_path):
    m, _ = rebooted_into_a_same_name_rebuild(w, node_i, tmp_path)
    # the new build did not boot: GRUB's default, the copy, did
    with booted(node_i, "vmlinuz-" + PREV):
        before = world.snapshot(node_i.root)
        r = agent(node_i.root, "apply", metadata=m)
        assert r.returncode == 1, r.stderr
        assert ("the node came back on kernel %s, the copy of the previous build of %s"
                % (PREV, K)) in r.stderr, r.stderr
        assert world.snapshot(node_i.root) == before, "the copy and all else stay"
        plan = plan_json(node_i.root, m)
        assert plan["action"] == "refuse", plan["reasons"]
        assert any("came back on %s" % PREV in x and "not trying again" in x
                   for x in plan["reasons"]), plan["reasons"]
        # another image, another kernel: the copy that runs stays the fallback
        other = plan_json(node_i.root, meta(tmp_path, "img-N", w.other))
    assert [h["result"] for h in history(node_i)] == ["rebooting", "failed"]
    assert other["action"] == "reboot" and other["fallback"] == {"kernel": PREV, "copies": []}
    assert "/boot/vmlinuz-" + PREV not in other["changes"]["sample"]["deleted"]


@pytest.mark.parametrize("at", ["verify:started", "bootloader:started"])
def test_a_same_name_rebuild_killed_between_its_sync_and_its_reboot_still_reboots(
        w, node_i, tmp_path, at):
    """The sync put build 2 under the running name; the node still runs build 1, so
    the resumed update still reboots, its fallback still the copy of build 1."""
    import sys
    from update_agent.state import journal
    m = meta(tmp_path, "img-RI", w.rebuilt_i)
    env = dict(os.environ, PYTHONPATH=os.path.join(world.PROJECT, "agent"),
               **{journal.FAULT_ENV: at})
    with booted(node_i, "vmlinuz-" + K):
        killed = subprocess.run([sys.executable, "-m", "update_agent", "--root", node_i.root,
                                 "--metadata", m, "apply"], env=env, capture_output=True,
                                start_new_session=True)  # the fault kills its process group
        assert killed.returncode == -9
        assert read(node_i, "boot/vmlinuz-" + K) == "kernel %s build 2\n" % K
        plan = plan_json(node_i.root, m)
        assert plan["action"] == "reboot", plan["reasons"]
        assert plan["fallback"] == {"kernel": PREV, "copies": []}
        r = agent(node_i.root, "apply", "--json", metadata=m)
    assert r.returncode == 0 and json.loads(r.stdout)["result"] == "rebooting", r.stderr
    assert read(node_i, "boot/vmlinuz-" + PREV) == "kernel %s build 1\n" % K
    assert read(node_i, "boot/initrd.img-" + PREV) == "initramfs %s build 1\n" % K


def test_a_volume_mounted_by_pre_configure_is_left_alone_before_a_reboot(w, node, tmp_path):
    # the reboot path does not plan again after pre-configure: the sync itself must
    # see the volumes mounted since the plan and keep out of them
    world.pre_configure_hook(node, "50-volumes", world.MOUNT_VOLUMES)
    try:
        r = agent(node.root, "apply", "--json", metadata=meta(tmp_path, "img-R", w.rebuilt))
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["result"] == "rebooting"
        world.assert_volumes_untouched(node.root)
        assert "/usr/share/app-old is not deleted: /usr/share/app-old/sub below it is left alone" in r.stderr
    finally:
        world.unmount_volumes(node.root)
    assert open(os.path.join(node.root, "etc/image_id")).read() == "img-R\n"


def test_a_process_started_after_the_plan_is_pinned_too(w, node, tmp_path):
    """The plan can be minutes old when the sync starts (a big image's manifest, a
    slow quiesce), and the reboot path does not plan again: what is in use is read
    again at the pin step, else remount,ro before the reboot is refused."""
    import signal
    open(os.path.join(node.root, "run/map-pre-configure"), "w").close()
    r = agent(node.root, "apply", "--json", metadata=meta(tmp_path, "img-R", w.rebuilt))
    with open(os.path.join(node.root, "run/mapper.pid")) as f:
        mapper = int(f.read())
    try:
        assert r.returncode == 0 and json.loads(r.stdout)["result"] == "rebooting", r.stderr
        assert "ro" in world.root_mount_options(node.root)
    finally:
        os.kill(mapper, signal.SIGKILL)


def test_the_running_kernel_is_kept_until_the_new_one_is_proven(w, node, tmp_path):
    m = meta(tmp_path, "img-N", w.other)
    plan = plan_json(node.root, m)
    assert plan["action"] == "reboot" and plan["kernel"] == {"running": K, "image": "9.9.9-test"}
    assert "/boot/vmlinuz-%s" % K not in plan["changes"]["sample"]["deleted"]
    r = agent(node.root, "apply", metadata=m)
    assert r.returncode == 0, r.stderr
    # the image has only 9.9.9-test; the node keeps the kernel it runs as well
    assert os.path.exists(os.path.join(node.root, "boot/vmlinuz-9.9.9-test"))
    assert os.path.exists(os.path.join(node.root, "boot/vmlinuz-" + K))
    assert os.path.isdir(os.path.join(node.root, "lib/modules", K))

    # "after the reboot" the old kernel still runs: a failure, reported once, no loop
    r = agent(node.root, "apply", metadata=m)
    assert r.returncode == 1 and "came back on kernel %s" % K in r.stderr
    assert os.path.exists(os.path.join(node.root, "boot/vmlinuz-" + K)), "fallback kernel kept"
    assert "ro" in world.root_mount_options(node.root)
    plan = plan_json(node.root, m)
    assert plan["action"] == "refuse" and any("not trying again" in x for x in plan["reasons"])
    assert agent(node.root, "apply", metadata=m).returncode == 1
    assert [h["result"] for h in history(node)] == ["rebooting", "failed"]
    # an operator asks again
    r = agent(node.root, "reboot", metadata=m)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("policy, result, words", [
    ("never", "refused", "reboot = never"),
    ("manual", "reboot-required", "update-agent reboot"),
])
def test_reboot_policy_from_the_metadata(w, node, tmp_path, policy, result, words):
    m = meta(tmp_path, "img-R", w.rebuilt, reboot=policy)
    before = world.snapshot(node.root)
    r = agent(node.root, "apply", "--json", metadata=m)
    assert r.returncode == 1 and words in r.stderr
    assert json.loads(r.stdout)["result"] == result
    assert world.snapshot(node.root) == before
    if policy == "manual":
        r = agent(node.root, "reboot", "--json", metadata=m)
        assert r.returncode == 0 and json.loads(r.stdout)["result"] == "rebooting"


def test_a_reboot_waits_for_a_fleet_slot(w, node, tmp_path):
    conf, member = slot_group(tmp_path, "node_id = node-1\n")
    m = meta(tmp_path, "img-R", w.rebuilt)
    # node-2 is rebooting: it holds the group's only slot
    node2 = member("node-2")
    assert node2.take()[0]
    before = world.snapshot(node.root)
    r = agent(node.root, "apply", "--json", metadata=m, config=conf)
    assert r.returncode == 1 and "no reboot slot" in r.stderr and "node-2" in r.stderr
    assert json.loads(r.stdout)["result"] == "waiting"
    assert world.snapshot(node.root) == before, "nothing happens without a slot"
    node2.release()
    r = agent(node.root, "apply", metadata=m, config=conf)
    assert r.returncode == 0, r.stderr
    assert list(node2.state()["holders"]) == ["node-1"], "held across the reboot"
    r = agent(node.root, "apply", metadata=m, config=conf)
    assert r.returncode == 0, r.stderr
    assert node2.state()["holders"] == {}, "released once the node is back and checked"


def test_the_slot_is_released_under_the_id_it_was_taken_with(w, node, tmp_path):
    """An image with an empty machine-id on a read-only root gets a new one made up
    at every boot: the node id after the reboot is not the one that took the slot."""
    import subprocess
    conf, member = slot_group(tmp_path)
    group = member("observer")
    m = meta(tmp_path, "img-R", w.rebuilt)
    r = agent(node.root, "apply", metadata=m, config=conf)
    assert r.returncode == 0, r.stderr
    before = open(os.path.join(node.root, "etc/machine-id")).read().strip()
    assert list(group.state()["holders"]) == [before]
    subprocess.run(["mount", "-o", "remount,rw", node.root], check=True)
    with open(os.path.join(node.root, "etc/machine-id"), "w") as f:
        f.write("1" * 32 + "\n")                    # the reboot: another transient id
    subprocess.run(["mount", "-o", "remount,ro", node.root], check=True)
    r = agent(node.root, "apply", metadata=m, config=conf)
    assert r.returncode == 0, r.stderr
    assert group.state()["holders"] == {}, "released under the id that took it"


def test_in_place_updates_take_a_lease_slot_with_coordinate_always(w, node, tmp_path):
    import subprocess
    import sys
    import time
    conf = tmp_path / "a.conf"
    conf.write_text("[coordination]\nbackend = file://%s/locks\ngroup = web\nmax_holders = 1\n"
                    "coordinate = always\nslot_timeout = 2\nnode_id = node-1\n" % tmp_path)
    env = dict(os.environ, PYTHONPATH=os.path.join(world.PROJECT, "agent"))
    holder = subprocess.Popen([sys.executable, "-m", "update_agent", "--root", node.root,
                               "--config", str(conf), "slot", "hold", "--node-id", "node-2", "--",
                               "sleep", "6"], env=env)
    try:
        time.sleep(1.5)
        before = world.snapshot(node.root)
        r = agent(node.root, "apply", metadata=w.metadata_for_b(str(tmp_path)), config=str(conf))
        assert r.returncode == 1 and "no slot in group web" in r.stderr, r.stderr
        assert world.snapshot(node.root) == before
    finally:
        assert holder.wait(timeout=30) == 0
    r = agent(node.root, "apply", metadata=w.metadata_for_b(str(tmp_path)), config=str(conf))
    assert r.returncode == 0, r.stderr


def test_sigterm_while_waiting_for_a_lease_slot_stops_the_wait(w, node, tmp_path):
    # the slot can be busy for up to slot_timeout (an hour by default): a stop asked
    # for meanwhile must end the wait, not outlast systemd's stop timeout
    import signal
    import subprocess
    import sys
    conf = tmp_path / "a.conf"
    conf.write_text("[coordination]\nbackend = file://%s/locks\ngroup = web\nmax_holders = 1\n"
                    "coordinate = always\nslot_timeout = 600\nnode_id = node-1\n" % tmp_path)
    env = dict(os.environ, PYTHONPATH=os.path.join(world.PROJECT, "agent"))
    argv = [sys.executable, "-m", "update_agent", "--root", node.root, "--config", str(conf)]
    holder = subprocess.Popen(argv + ["-v", "slot", "hold", "--node-id", "node-2", "--", "sleep", "300"],
                              env=env, start_new_session=True, stderr=subprocess.PIPE, text=True)
    try:
        assert any("holding lease slot" in line for line in holder.stderr), "the holder got no slot"
        before = world.snapshot(node.root)
        waiting = subprocess.Popen(argv + ["-v", "apply", "--metadata", w.metadata_for_b(str(tmp_path))],
                                   env=env, stderr=subprocess.PIPE, text=True)
        for line in waiting.stderr:
            if "step pre-configure" in line or "waiting for a lease slot" in line:
                break
        waiting.send_signal(signal.SIGTERM)
        _, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 1
        assert "stopped while waiting for a slot in group web, as asked; nothing was changed" in err, err
        assert world.snapshot(node.root) == before
    finally:
        os.killpg(holder.pid, signal.SIGTERM)
        holder.wait(timeout=30)


def test_an_unhealthy_node_keeps_its_slot_and_its_fallback_until_healthy(w, node, tmp_path):
    """After the reboot the new kernel runs, but a health.d hook fails: the node is
    not declared done, its kernel is not made the default, the group counts one
    failure (not one per retry), and the slot stays held; once healthy it finishes."""
    conf, member = slot_group(tmp_path, "node_id = node-1\n")
    group = member("observer")
    m = meta(tmp_path, "img-R", w.rebuilt)
    assert agent(node.root, "apply", metadata=m, config=conf).returncode == 0
    open(os.path.join(node.root, "run/fail-health"), "w").close()
    for attempt in range(2):
        r = agent(node.root, "apply", "--json", metadata=m, config=conf)
        assert r.returncode == 1 and json.loads(r.stdout)["result"] == "unhealthy", r.stderr
        assert "health hook told to fail" in r.stderr and "slot stays held" in r.stderr
        state = group.state()
        assert list(state["holders"]) == ["node-1"] and state["failures"] == 1, attempt
        assert "ro" in world.root_mount_options(node.root)
    assert "bootloader" not in hooks_log(node)[2:], "not made the boot default"
    assert os.path.exists(os.path.join(node.root, "boot/vmlinuz-" + PREV)), "the fallback stays"
    assert json.loads(agent(node.root, "status", "--json").stdout)["unfinished_update"]["step"] == "health"

    os.unlink(os.path.join(node.root, "run/fail-health"))
    r = agent(node.root, "apply", "--json", metadata=m, config=conf)
    assert r.returncode == 0 and json.loads(r.stdout)["result"] == "success", r.stderr
    assert hooks_log(node)[-2:] == ["health", "bootloader"]
    assert not os.path.exists(os.path.join(node.root, "boot/vmlinuz-" + PREV))
    assert group.state()["holders"] == {}
    assert [h["result"] for h in history(node)] == ["rebooting", "unhealthy", "unhealthy", "success"]


def unhealthy_after_its_reboot(w, node, tmp_path, extra=""):
    """Node node-1 rebooted into img-R, and its health check fails (run/fail-health
    stays): it holds its reboot slot. Returns the config and an observer of the group."""
    conf, member = slot_group(tmp_path, "node_id = node-1\n" + extra)
    m = meta(tmp_path, "img-R", w.rebuilt)
    assert agent(node.root, "apply", metadata=m, config=conf).returncode == 0
    open(os.path.join(node.root, "run/fail-health"), "w").close()
    r = agent(node.root, "apply", "--json", metadata=m, config=conf)
    assert json.loads(r.stdout)["result"] == "unhealthy", r.stderr
    assert list(member("observer").state()["holders"]) == ["node-1"]
    return conf, member("observer")


def test_new_metadata_gets_an_unhealthy_node_out_with_the_slot_it_holds(w, node, tmp_path):
    """An image that never passes its health check must not pin the node: the way back
    (the metadata names the old image again) is planned, and reuses the slot."""
    conf, group = unhealthy_after_its_reboot(w, node, tmp_path, "failure_threshold = 1\n")
    assert group.state()["frozen"], "one failure stops this group"

    back = meta(tmp_path, "img-A", w.ext4(w.tree_a, "A"))
    plan = plan_json(node.root, back)
    assert plan["action"] == "reboot" and plan["image_id"] == "img-A", plan["reasons"]
    assert any("superseded by img-A" in x for x in plan["reasons"])
    os.unlink(os.path.join(node.root, "run/fail-health"))
    r = agent(node.root, "apply", "--json", metadata=back, config=conf)
    assert json.loads(r.stdout)["result"] == "rebooting", r.stderr
    assert list(group.state()["holders"]) == ["node-1"], "its own slot, though the group is stopped"
    r = agent(node.root, "apply", "--json", metadata=back, config=conf)
    assert json.loads(r.stdout)["result"] == "success", r.stderr
    world.assert_matches_image(node.root, w.tree_a)
    assert group.state()["holders"] == {}


def test_the_slot_of_an_unhealthy_reboot_is_given_back_by_the_in_place_update_that_works(
        w, node, tmp_path):
    """An unhealthy reboot holds its slot; the fix is an in-place image (the kernel the
    node now runs). If that update fails first, the debt must survive it: the slot
    goes back when an update to the fix succeeds, not never."""
    conf, group = unhealthy_after_its_reboot(w, node, tmp_path)
    os.unlink(os.path.join(node.root, "run/fail-health"))

    fix_tree = w.tree("img-R-fix", image_id="img-R-fix", release=K, variant="B", kernel_build=2)
    with open(os.path.join(fix_tree, "usr/share/doc/app/FIXED"), "w") as f:
        f.write("the fix\n")
    fix = meta(tmp_path, "img-R-fix", w.ext4(fix_tree, "R-fix"))
    assert plan_json(node.root, fix)["action"] == "in-place"
    open(os.path.join(node.root, "run/fail-configure"), "w").close()
    r = agent(node.root, "apply", "--json", metadata=fix, config=conf)
    assert r.stdout and json.loads(r.stdout)["result"] == "failed", r.stderr
    assert list(group.state()["holders"]) == ["node-1"], "held while the node is not right"
    os.unlink(os.path.join(node.root, "run/fail-configure"))
    r = agent(node.root, "apply", "--json", metadata=fix, config=conf)
    assert r.stdout and json.loads(r.stdout)["result"] == "success", r.stderr
    assert group.state()["holders"] == {}, "given back"
    world.assert_matches_image(node.root, fix_tree)


def test_reboot_method_kexec_loads_the_new_kernel_where_this_kernel_can(w, node, tmp_path):
    """With reboot_method = kexec and kexec-tools on the node, the plan says whether the
    running kernel (this machine's) can kexec; the recorded reboot is what it would run."""
    import subprocess
    from update_agent.decide import kexec
    conf = tmp_path / "k.conf"
    conf.write_text("[agent]\nreboot_method = kexec\n")
    m = meta(tmp_path, "img-R", w.rebuilt)
    can = os.path.exists(kexec.SYSFS)

    def plan():
        r = agent(node.root, "--dry-run", "--json", metadata=m, config=str(conf))
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    first = plan()
    assert first["reboot_method"] == "reboot"
    why = "kexec-tools is not installed" if can else "running kernel cannot kexec"
    assert any(why in x for x in first["reasons"]), first["reasons"]
    subprocess.run(["mount", "-o", "remount,rw", node.root], check=True)
    tool = os.path.join(node.root, "usr/sbin/kexec")
    os.makedirs(os.path.dirname(tool), exist_ok=True)
    with open(tool, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(tool, 0o755)
    subprocess.run(["mount", "-o", "remount,ro", node.root], check=True)
    second = plan()
    r = agent(node.root, "apply", metadata=m, config=str(conf))
    assert r.returncode == 0, r.stderr
    if can:
        assert second["reboot_method"] == "kexec"
        assert "`%s --load %s/boot/vmlinuz-%s --reuse-cmdline" % (tool, node.root, K) in r.stderr
        assert "then `systemctl kexec`" in r.stderr
    else:  # this machine's kernel, built without kexec: through the boot loader, and why
        assert second["reboot_method"] == "reboot"
        assert any("running kernel cannot kexec" in x for x in second["reasons"]), second["reasons"]
        assert "did not run `systemctl reboot`" in r.stderr
