"""The shipped GRUB boot-loader hook on a real grub.cfg layout (Debian's, with the
Advanced options submenu and recovery entries). grub-reboot and grub-set-default
are recording stand-ins: this machine boots no GRUB of its own to change."""

import os
import subprocess

import world

HOOK = os.path.join(world.PROJECT, "hooks", "bootloader.d", "50-update-agent-grub")
# as grub-mkconfig's 00_header writes it with GRUB_DEFAULT=saved
HEADER = """\
if [ -s $prefix/grubenv ]; then
  load_env
fi
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
   set next_entry=
   save_env next_entry
   set boot_once=true
else
   set default="${saved_entry}"
fi
"""
GRUB_CFG = HEADER + """\
menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple-1234' {
\tlinux\t/boot/vmlinuz-6.1.0-26-amd64 root=UUID=1234 ro
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-1234' {
\tmenuentry 'Debian GNU/Linux, with Linux 6.1.0-28-amd64 (recovery mode)' --class debian $menuentry_id_option 'gnulinux-6.1.0-28-amd64-recovery-1234' {
\t\tlinux\t/boot/vmlinuz-6.1.0-28-amd64 root=UUID=1234 ro single
\t}
\tmenuentry 'Debian GNU/Linux, with Linux 6.1.0-28-amd64' --class debian $menuentry_id_option 'gnulinux-6.1.0-28-amd64-advanced-1234' {
\t\tlinux\t/boot/vmlinuz-6.1.0-28-amd64 root=UUID=1234 ro
\t}
\tmenuentry 'Debian GNU/Linux, with Linux 6.1.0-26-amd64' --class debian $menuentry_id_option 'gnulinux-6.1.0-26-amd64-advanced-1234' {
\t\tlinux\t/boot/vmlinuz-6.1.0-26-amd64 root=UUID=1234 ro
\t}
}
"""


def run_hook(tmp_path, cfg=GRUB_CFG, **env):
    root = tmp_path / "root"
    (root / "boot/grub").mkdir(parents=True, exist_ok=True)
    (root / "boot/grub/grub.cfg").write_text(cfg)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("grub-reboot", "grub-set-default"):
        (bin_dir / tool).write_text('#!/bin/sh\necho "$(basename "$0") $*" >> %s/calls\n' % tmp_path)
        (bin_dir / tool).chmod(0o755)
    e = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ["PATH"]), UPDATE_AGENT_ROOT=str(root),
             **env)
    r = subprocess.run(["sh", HOOK], env=e, capture_output=True, text=True)
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    return r, calls, root


def test_boot_once_then_make_default(tmp_path):
    entry = "gnulinux-advanced-1234>gnulinux-6.1.0-28-amd64-advanced-1234"
    r, calls, root = run_hook(tmp_path, UPDATE_AGENT_KERNEL="6.1.0-28-amd64", UPDATE_AGENT_BOOT="once")
    assert r.returncode == 0, r.stderr
    assert calls == ["grub-reboot --boot-directory=%s/boot %s" % (root, entry)]
    r, calls, _ = run_hook(tmp_path, UPDATE_AGENT_KERNEL="6.1.0-28-amd64", UPDATE_AGENT_BOOT="default")
    assert r.returncode == 0, r.stderr
    assert calls[-1] == "grub-set-default --boot-directory=%s/boot %s" % (root, entry)


def test_the_running_kernel_stays_the_default_until_the_new_one_is_proven(tmp_path):
    """Without a saved default, GRUB_DEFAULT=saved boots the first entry (the newest
    kernel): a new kernel that does not boot would be booted again at every reset."""
    new = "gnulinux-advanced-1234>gnulinux-6.1.0-28-amd64-advanced-1234"
    r, calls, root = run_hook(tmp_path, UPDATE_AGENT_KERNEL="6.1.0-28-amd64",
                              UPDATE_AGENT_OLD_KERNEL="6.1.0-26-amd64", UPDATE_AGENT_BOOT="once")
    assert r.returncode == 0, r.stderr
    old = "gnulinux-advanced-1234>gnulinux-6.1.0-26-amd64-advanced-1234"
    assert calls == ["grub-set-default --boot-directory=%s/boot %s" % (root, old),
                     "grub-reboot --boot-directory=%s/boot %s" % (root, new)]


def test_a_running_kernel_without_a_menu_entry_fails_the_step(tmp_path):
    r, calls, _ = run_hook(tmp_path, UPDATE_AGENT_KERNEL="6.1.0-28-amd64",
                           UPDATE_AGENT_OLD_KERNEL="6.1.0-9-gone", UPDATE_AGENT_BOOT="once")
    assert r.returncode == 1 and "running kernel 6.1.0-9-gone has no menu entry" in r.stderr
    assert calls == []


def test_a_fixed_default_is_refused(tmp_path):
    cfg = GRUB_CFG.replace('set default="${saved_entry}"', 'set default="0"')
    r, calls, _ = run_hook(tmp_path, cfg=cfg, UPDATE_AGENT_KERNEL="6.1.0-28-amd64",
                           UPDATE_AGENT_OLD_KERNEL="6.1.0-26-amd64", UPDATE_AGENT_BOOT="once")
    assert r.returncode == 1 and "GRUB_DEFAULT is not 'saved'" in r.stderr, r.stderr
    assert calls == []


def test_a_kernel_without_a_menu_entry_fails_the_step(tmp_path):
    r, calls, _ = run_hook(tmp_path, UPDATE_AGENT_KERNEL="6.9.9-missing", UPDATE_AGENT_BOOT="once")
    assert r.returncode == 1 and "no menu entry for kernel 6.9.9-missing" in r.stderr
    assert calls == []


# a same-name rebuild: 10_linux lists the agent's copy of the running build first
# (dpkg orders 6.1.0-26-amd64.update-agent-prev above 6.1.0-26-amd64), each with its initrd
PREV = "6.1.0-26-amd64.update-agent-prev"
REBUILD_CFG = HEADER + """\
menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple-1234' {
\tlinux\t/boot/vmlinuz-%(p)s root=UUID=1234 ro
\tinitrd\t/boot/initrd.img-%(p)s
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-1234' {
\tmenuentry 'Debian GNU/Linux, with Linux %(p)s' --class debian $menuentry_id_option 'gnulinux-%(p)s-advanced-1234' {
\t\tlinux\t/boot/vmlinuz-%(p)s root=UUID=1234 ro
\t\tinitrd\t/boot/initrd.img-%(p)s
\t}
\tmenuentry 'Debian GNU/Linux, with Linux %(p)s (recovery mode)' --class debian $menuentry_id_option 'gnulinux-%(p)s-recovery-1234' {
\t\tlinux\t/boot/vmlinuz-%(p)s root=UUID=1234 ro single
\t}
\tmenuentry 'Debian GNU/Linux, with Linux 6.1.0-26-amd64' --class debian $menuentry_id_option 'gnulinux-6.1.0-26-amd64-advanced-1234' {
\t\tlinux\t/boot/vmlinuz-6.1.0-26-amd64 root=UUID=1234 ro
\t\tinitrd\t/boot/initrd.img-6.1.0-26-amd64
\t}
}
""" % {"p": PREV}


def test_a_same_name_rebuild_boots_once_with_the_copy_of_the_running_build_the_default(tmp_path):
    r, calls, root = run_hook(tmp_path, cfg=REBUILD_CFG, UPDATE_AGENT_KERNEL="6.1.0-26-amd64",
                              UPDATE_AGENT_OLD_KERNEL=PREV, UPDATE_AGENT_BOOT="once")
    assert r.returncode == 0, r.stderr
    sub = "gnulinux-advanced-1234>"
    assert calls == [
        "grub-set-default --boot-directory=%s/boot %sgnulinux-%s-advanced-1234" % (root, sub, PREV),
        "grub-reboot --boot-directory=%s/boot %sgnulinux-6.1.0-26-amd64-advanced-1234" % (root, sub)]


def test_a_version_is_not_found_by_a_longer_one_that_starts_with_it(tmp_path):
    # the copy gone (the new build proven), 6.1.0-2 must not find 6.1.0-26-amd64's entry
    r, calls, _ = run_hook(tmp_path, UPDATE_AGENT_KERNEL="6.1.0-2", UPDATE_AGENT_BOOT="default")
    assert r.returncode == 1 and "no menu entry for kernel 6.1.0-2 " in r.stderr, r.stderr
    assert calls == []
