"""System.reboot: the one place the machine reboots; no process is spawned here."""

from fakes import Answer, FakeSystem

LOAD = ["/usr/sbin/kexec", "--load", "/boot/vmlinuz-6.1.0-10-amd64", "--reuse-cmdline"]


def Recording(load_rc=0):
    """Records what would run, and answers with the given return code for kexec."""
    return FakeSystem({"kexec": Answer(load_rc, "", "no kexec support" if load_rc else "")})


def ran(system):
    return [(r.argv, r.check) for r in system.runs]


def test_a_plain_reboot_runs_systemctl_reboot_only():
    system = Recording()
    system.reboot("reboot")
    assert ran(system) == [(["/usr/bin/systemctl", "reboot"], True)]


def test_kexec_loads_the_kernel_then_asks_systemd_to_kexec():
    system = Recording()
    system.reboot("kexec", LOAD)
    assert ran(system) == [(LOAD, False), (["/usr/bin/systemctl", "kexec"], True)]


def test_a_failed_kexec_load_reboots_through_the_boot_loader(caplog):
    system = Recording(load_rc=1)
    system.reboot("kexec", LOAD)
    assert ran(system) == [(LOAD, False), (["/usr/bin/systemctl", "reboot"], True)]
    assert "rebooting through the boot loader instead" in caplog.text
    assert "no kexec support" in caplog.text
