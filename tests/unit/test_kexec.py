"""kexec: when a reboot goes through kexec, and what it loads."""

import pytest

from update_agent.decide import kexec
from update_agent.node.paths import NodePaths

IMAGE = {"boot/vmlinuz-6.1.0-56-amd64": object(), "boot/initrd.img-6.1.0-56-amd64": object()}
K = "6.1.0-56-amd64"


def test_kexec_where_asked_and_possible():
    method, why = kexec.decide("kexec", K, IMAGE, True, "/usr/sbin/kexec")
    assert method == "kexec" and "/boot/vmlinuz-%s" % K in why


@pytest.mark.parametrize("can, tool, image, words", [
    (False, "/usr/sbin/kexec", IMAGE, "running kernel cannot kexec"),
    (True, "", IMAGE, "kexec-tools is not installed"),
    (True, "/usr/sbin/kexec", {}, "no /boot/vmlinuz-%s" % K),
])
def test_a_reboot_through_the_boot_loader_where_kexec_cannot_be_done(can, tool, image, words):
    method, why = kexec.decide("kexec", K, image, can, tool)
    assert method == "reboot" and words in why and "boot loader" in why


def test_a_plain_reboot_needs_no_reason():
    assert kexec.decide("reboot", K, IMAGE, True, "/usr/sbin/kexec") == ("reboot", "")


def test_the_load_command_names_the_new_kernel_and_its_initrd_in_the_root(tmp_path):
    paths = NodePaths(str(tmp_path))
    argv = kexec.load_argv("/usr/sbin/kexec", paths, K, IMAGE)
    assert argv == ["/usr/sbin/kexec", "--load", "%s/boot/vmlinuz-%s" % (tmp_path, K), "--reuse-cmdline",
                    "--initrd=%s/boot/initrd.img-%s" % (tmp_path, K)]
    assert "--initrd" not in " ".join(kexec.load_argv("kexec", paths, K, {"boot/vmlinuz-" + K: 1}))
