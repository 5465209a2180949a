"""plan.preflight and plan.decide: the action and every reason for it."""

import dataclasses

import pytest

from update_agent.decide import plan
from update_agent.config import AgentConfig, Config
from update_agent.decide.sides import ImageSide, NodeSide, PlanOptions
from update_agent.sources.desired import Desired
from update_agent.node.facts import Facts
from update_agent.state.journal import Journal
from update_agent.node.manifest import Entry

KV = "6.1.0-9-amd64"
DESIRED = Desired("img-2", "https://images/img-2.qcow2", "")
CONFIG = Config(agent=AgentConfig(free_space_margin=1000))


def F(digest, size=10):
    return Entry("f", 0o644, 0, 0, size, digest, "", "")


def D():
    return Entry("d", 0o755, 0, 0, 0, "", "", "")


def L(target):
    return Entry("l", 0o777, 0, 0, 0, target, "", "")


def facts(**kw):
    base = dict(root="/", release=KV, root_is_mount_point=True, root_read_only=False,
                root_fstype="ext4", state_dir="/var/lib/update-agent", state_on_root_fs=False,
                state_read_only=False, free_bytes=10**9, mount_points=(),
                current_image_id="img-1",
                excluded=("/etc/image_id", "/var/lib/update-agent", "/srv/data"))
    base.update(kw)
    return Facts(**base)


def journal(image_id="img-2", status="failed", root_was_ro=True):
    return Journal(image_id=image_id, digest="", previous_image_id="img-1",
                   previous_digest="", action="in-place", root_was_ro=root_was_ro,
                   started_at=0.0, steps={"fetch": "done", "sync": "started"}, status=status,
                   failed_step="sync" if status == "failed" else "", error="rsync died")


def tree(kernel=KV, vmlinuz="build-1", motd="hello"):
    t = {"etc": D(), "etc/motd": F(motd, 6), "lib": L("usr/lib"), "usr": D(), "usr/lib": D()}
    if kernel:
        t["boot/vmlinuz-" + kernel] = F(vmlinuz, 100)
        t["usr/lib/modules/%s/ext4.ko" % kernel] = F("ext4", 50)
    return t


def decide(node=None, image=None, f=None, j=None, accounts=None, adopt=False, config=CONFIG):
    return plan.decide(DESIRED, f or facts(), j, config,
                       ImageSide("sha256:abc", tree(motd="bye") if image is None else image),
                       NodeSide(tree() if node is None else node, accounts or {}),
                       PlanOptions(adopt=adopt))


def test_noop_when_current_is_desired():
    p = plan.preflight(DESIRED, facts(current_image_id="img-2"), None)
    assert p.action == plan.NOOP
    assert "already current" in p.reasons[0]
    done = plan.preflight(DESIRED, facts(current_image_id="img-2"), journal(status="done"))
    assert done.action == plan.NOOP


def test_unfinished_journal_for_same_image_resumes_instead_of_noop():
    f = facts(current_image_id="img-2")
    assert plan.preflight(DESIRED, f, journal()) is None
    p = decide(f=f, j=journal())
    assert p.action != plan.NOOP
    assert p.resume
    assert "resuming" in p.reasons[0] and "sync" in p.reasons[0] and "rsync died" in p.reasons[0]


def test_unfinished_journal_for_another_image_is_superseded():
    p = decide(j=journal(image_id="img-3"))
    assert not p.resume
    assert "superseded" in p.reasons[0] and "img-3" in p.reasons[0]


def test_missing_image_id_refuses_unless_adopt():
    f = facts(current_image_id="")
    p = plan.preflight(DESIRED, f, None)
    assert p.action == plan.REFUSE
    assert any("--adopt" in r for r in p.reasons)
    assert plan.preflight(DESIRED, f, None, adopt=True) is None
    assert decide(f=f, adopt=True).action == plan.IN_PLACE


def test_state_dir_on_read_only_root_is_refused():
    p = plan.preflight(DESIRED, facts(root_read_only=True, state_on_root_fs=True), None)
    assert p.action == plan.REFUSE
    assert any("state dir /var/lib/update-agent" in r for r in p.reasons)


def test_read_only_state_dir_is_refused():
    p = plan.preflight(DESIRED, facts(state_read_only=True), None)
    assert p.action == plan.REFUSE


def test_read_only_root_that_is_not_a_mount_point_is_refused():
    p = plan.preflight(DESIRED, facts(root_read_only=True, root_is_mount_point=False), None)
    assert p.action == plan.REFUSE
    assert any("cannot be remounted" in r for r in p.reasons)


def test_not_enough_free_space_is_refused_with_the_numbers():
    # etc/motd changes: 6 bytes + 1000 margin
    p = decide(f=facts(free_bytes=1005))
    assert p.action == plan.REFUSE
    assert any("need 1006 bytes" in r and "1000 byte margin" in r and "have 1005" in r
               for r in p.reasons)
    assert decide(f=facts(free_bytes=1006)).action == plan.IN_PLACE


def test_same_kernel_is_in_place():
    p = decide()
    assert p.action == plan.IN_PLACE
    assert p.changes.changed == ("etc/motd",)
    assert p.image_kernel == KV


def test_different_kernel_means_reboot():
    p = decide(image=tree(kernel="6.1.0-10-amd64", motd="bye"))
    assert p.action == plan.REBOOT
    assert p.image_kernel == "6.1.0-10-amd64"
    assert any("differs from running kernel" in r for r in p.reasons)


def test_same_kernel_name_rebuilt_means_reboot():
    assert decide(image=tree(vmlinuz="build-2")).action == plan.REBOOT


def test_image_without_kernel_is_refused():
    p = decide(image=tree(kernel=None))
    assert p.action == plan.REFUSE
    assert any("no kernel" in r for r in p.reasons)


def test_conflict_is_refused():
    node = dict(tree(), srv=D())
    image = dict(tree(motd="bye"), srv=L("/mnt"))
    p = decide(node=node, image=image)
    assert p.action == plan.REFUSE
    assert any("/srv" in r and "symlink" in r for r in p.reasons)


def test_excluded_paths_in_the_image_are_not_synced():
    image = dict(tree(motd="bye"), **{"srv": D(), "srv/data": D(), "srv/data/x": F("x")})
    p = decide(image=image)
    assert p.changes.added == ("srv",)


def test_account_clash_is_refused():
    accounts = {"etc/passwd": ("alice:x:1001:1001::/:/bin/sh\n", "bob:x:1001:1001::/:/bin/sh\n")}
    p = decide(accounts=accounts)
    assert p.action == plan.REFUSE
    assert any("accounts cannot be merged" in r and "alice" in r for r in p.reasons)


def test_changed_account_files_are_in_the_plan():
    accounts = {"etc/passwd": ("root:x:0:0::/root:/bin/sh\n", "root:x:0:0::/root:/bin/bash\n"),
                "etc/group": ("root:x:0:\n", "root:x:0:\n")}
    p = decide(accounts=accounts)
    assert p.accounts == (("etc/passwd", "root:x:0:0::/root:/bin/bash\n"),)


@pytest.mark.parametrize("status,expected", [("failed", True), ("running", True), ("done", False)])
def test_root_was_ro_comes_from_an_unfinished_journal(status, expected):
    # the crash left the root writable; the journal remembers it was read-only
    f = facts(root_read_only=False)
    assert decide(f=f, j=journal(status=status, root_was_ro=True)).root_was_ro is expected


def test_root_was_ro_from_journal_in_preflight_refusal():
    p = plan.preflight(DESIRED, facts(state_read_only=True), journal(root_was_ro=True))
    assert p.action == plan.REFUSE and p.root_was_ro


def test_root_was_ro_without_journal_comes_from_facts():
    f = facts(root_read_only=True)
    assert decide(f=f).root_was_ro
    assert not decide(f=dataclasses.replace(f, root_read_only=False)).root_was_ro


def test_touched_paths_are_counted_apart_from_the_bytes_written():
    node = tree()
    image = dict(tree(motd="bye"), usr=D()._replace(mtime=7), lib=L("usr/lib")._replace(mtime=7))
    p = decide(node=node, image=image)
    assert p.action == plan.IN_PLACE
    d = p.to_dict()["changes"]
    assert d["touched"] == 2 and d["sample"]["touched"] == ["/lib", "/usr"]
    assert d["bytes"] == 6 and d["changed"] == 1, "a touch writes no bytes"
    assert any("2 touched" in r for r in p.reasons)


PREV = KV + ".update-agent-prev"


def with_initrd(t, release=KV, build="initrd-1"):
    t = dict(t)
    t["boot/initrd.img-" + release] = F(build, 40)
    return t


def test_a_same_name_rebuild_plans_a_copy_of_the_running_build_as_the_fallback():
    p = decide(node=with_initrd(tree()), image=with_initrd(tree(vmlinuz="build-2"), build="initrd-2"))
    assert p.action == plan.REBOOT and p.fallback.kernel == PREV
    copies = [["/boot/vmlinuz-" + KV, "/boot/vmlinuz-" + PREV],
              ["/boot/initrd.img-" + KV, "/boot/initrd.img-" + PREV]]
    assert p.to_dict()["fallback"] == {"kernel": PREV, "copies": copies}
    assert {"boot/vmlinuz-" + PREV, "boot/initrd.img-" + PREV} <= set(p.kept_kernel)
    assert any("copied as /boot/vmlinuz-%s" % PREV in r for r in p.reasons), p.reasons


def test_a_new_kernel_name_falls_back_to_the_running_kernel_itself():
    p = decide(image=tree(kernel="6.1.0-10-amd64", motd="bye"))
    assert p.fallback.kernel == KV and p.fallback.copies == ()
    assert p.to_dict()["fallback"] == {"kernel": KV, "copies": []}


def test_a_node_running_the_copy_keeps_it_through_an_in_place_update():
    """After a same-name rebuild that did not boot, the node runs the copy: an image
    with the copy's build is in-place, and the copy GRUB's default names is not deleted."""
    node = with_initrd(tree(vmlinuz="build-2"))
    node["boot/vmlinuz-" + PREV] = F("build-1", 100)
    node["boot/initrd.img-" + PREV] = F("initrd-1", 40)
    p = plan.decide(DESIRED, facts(boot_image="vmlinuz-" + PREV), None, CONFIG,
                    ImageSide("sha256:abc", with_initrd(tree(vmlinuz="build-1"))),
                    NodeSide(node, {}, running_vmlinuz="build-1"))
    assert p.action == plan.IN_PLACE, p.reasons
    assert "boot/vmlinuz-" + PREV not in p.changes.deleted
    assert "boot/initrd.img-" + PREV not in p.changes.deleted


def test_the_fallback_copy_must_fit_on_the_root_too():
    node = with_initrd(tree())
    image = with_initrd(tree(vmlinuz="build-2"), build="initrd-2")
    # 140 bytes of kernel and initrd change, 1000 margin, and their 140 byte copy
    p = decide(node=node, image=image, f=facts(free_bytes=1279))
    assert p.action == plan.REFUSE
    assert any("need 1280 bytes" in r and "fallback kernel's copy of 140 bytes" in r
               and "have 1279" in r for r in p.reasons), p.reasons
    assert decide(node=node, image=image, f=facts(free_bytes=1280)).action == plan.REBOOT


def reboot_journal(steps, image_id="img-2", fallback=PREV):
    return Journal(image_id=image_id, digest="", previous_image_id="img-1", previous_digest="",
                   action="reboot", root_was_ro=True, started_at=0.0, steps=steps,
                   status="failed", kernel=KV, old_kernel=fallback, fallback=fallback)


@pytest.mark.parametrize("f, j, in_copy", [
    (facts(boot_image="vmlinuz-" + PREV), None, True),                 # came back on it
    (facts(boot_image="vmlinuz-" + KV), None, False),
    (facts(), reboot_journal({"fallback": "done", "sync": "started"}), True),  # not rebooted yet
    (facts(), reboot_journal({"fallback": "started"}), False),          # the copy may not be whole
    (facts(), reboot_journal({"fallback": "done", "reboot": "done"}), False),  # rebooted since
    (facts(), reboot_journal({"fallback": "done"}, fallback=""), False),  # a new kernel name
])
def test_where_the_running_build_is(f, j, in_copy):
    assert plan.running_in_copy(f, j) is in_copy


def test_a_reboot_resumed_after_its_sync_still_reboots_and_keeps_the_copy():
    """Killed between the sync and the reboot: the node's kernel files are the image's
    now, but the node still runs the copy's build, which stays its fallback."""
    node = with_initrd(tree(vmlinuz="build-2"), build="initrd-2")
    node["boot/vmlinuz-" + PREV] = F("build-1", 100)
    node["boot/initrd.img-" + PREV] = F("initrd-1", 40)
    j = reboot_journal({"fallback": "done", "sync": "done", "verify": "started"})
    p = plan.decide(DESIRED, facts(), j, CONFIG,
                    ImageSide("sha256:abc", with_initrd(tree(vmlinuz="build-2"), build="initrd-2")),
                    NodeSide(node, {}, running_vmlinuz="build-1"))
    assert p.action == plan.REBOOT, p.reasons
    assert p.fallback == plan.kernel.Fallback(PREV, (), ("boot/vmlinuz-" + PREV,
                                                         "boot/initrd.img-" + PREV))
    assert not set(p.changes.deleted) & {"boot/vmlinuz-" + PREV, "boot/initrd.img-" + PREV}


def test_a_modules_only_rebuild_resumed_after_its_sync_still_reboots():
    node = tree()
    node["usr/lib/modules/%s/ext4.ko" % KV] = F("ext4-build-2", 50)   # synced already
    j = reboot_journal({"fallback": "done", "sync": "done"})
    p = decide(node=node, image=dict(node), j=j)
    assert p.action == plan.REBOOT
    assert any("has not rebooted yet" in r for r in p.reasons), p.reasons
