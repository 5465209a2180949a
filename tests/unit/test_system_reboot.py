"""System.reboot: the one place the machine reboots; no process is spawned here."""

import subprocess

from update_agent.system import System

LOAD = ["/usr/sbin/kexec", "--load", "/boot/vmlinuz-6.1.0-10-amd64", "--reuse-cmdline"]


class Recording(System):
    """Records what would run, and answers with the given return code for kexec."""

    def __init__(self, load_rc=0):
        super().__init__(clock=lambda: 0.0)
        self.ran = []
        self.load_rc = load_rc

    def which(self, name):
        return "/usr/bin/" + name

    def run(self, argv, *, check=True, **kw):
        self.ran.append((list(argv), check))
        rc = self.load_rc if argv[0].endswith("kexec") else 0
        return subprocess.CompletedProcess(argv, rc, "", "no kexec support" if rc else "")


def test_a_plain_reboot_runs_systemctl_reboot_only():
    system = Recording()
    system.reboot("reboot")
    assert system.ran == [(["/usr/bin/systemctl", "reboot"], True)]


def test_kexec_loads_the_kernel_then_asks_systemd_to_kexec():
    system = Recording()
    system.reboot("kexec", LOAD)
    assert system.ran == [(LOAD, False), (["/usr/bin/systemctl", "kexec"], True)]


def test_a_failed_kexec_load_reboots_through_the_boot_loader(caplog):
    system = Recording(load_rc=1)
    system.reboot("kexec", LOAD)
    assert system.ran == [(LOAD, False), (["/usr/bin/systemctl", "reboot"], True)]
    assert "rebooting through the boot loader instead" in caplog.text
    assert "no kexec support" in caplog.text
