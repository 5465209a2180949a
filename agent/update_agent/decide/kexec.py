"""How to reboot into the new kernel: `systemctl reboot`, or kexec where asked and possible.

systemctl kexec loads a kernel by itself only from boot loader spec entries,
which a GRUB node does not have: the agent loads the image's kernel with
kexec-tools first (`kexec --load`, this boot's command line reused), then
asks systemd to kexec. Where the config asks for kexec but this kernel or
node cannot do it, the reboot goes through the firmware and the boot loader,
and the plan says why. decide() is pure; node.facts reads what it needs.
"""

SYSFS = "/sys/kernel/kexec_loaded"   # present when the running kernel can kexec
TOOL = ("usr/sbin/kexec", "sbin/kexec")



def decide(asked, kernel, image_entries, can_kexec, tool):
    """(method, why): method is "reboot" or "kexec"."""
    if asked != "kexec":
        return "reboot", ""
    if not can_kexec:
        return "reboot", ("reboot_method = kexec, but the running kernel cannot kexec (no %s): "
                          "a reboot through the boot loader" % SYSFS)
    if not tool:
        return "reboot", ("reboot_method = kexec, but kexec-tools is not installed on the node: "
                          "a reboot through the boot loader")
    if "boot/vmlinuz-%s" % kernel not in image_entries:
        return "reboot", ("reboot_method = kexec, but the image has no /boot/vmlinuz-%s to load: "
                          "a reboot through the boot loader" % kernel)
    return "kexec", ("kexec into /boot/vmlinuz-%s, with this boot's command line (firmware and "
                     "boot loader skipped)" % kernel)


def load_argv(tool, paths, kernel, image_entries):
    argv = [tool, "--load", paths.node("/boot/vmlinuz-%s" % kernel), "--reuse-cmdline"]
    if "boot/initrd.img-%s" % kernel in image_entries:
        argv.append("--initrd=" + paths.node("/boot/initrd.img-%s" % kernel))
    return argv
