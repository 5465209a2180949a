"""The systemd unit: notify, watchdog, a stop that never cuts a step in half,
and nothing that would give the agent a private view of the mounts."""

import configparser
import os

UNIT = os.path.join(os.path.dirname(__file__), "..", "..", "systemd", "update-agent.service")
PRIVATE_MOUNT_OPTIONS = ("ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
                         "ReadOnlyPaths", "ReadWritePaths", "InaccessiblePaths", "TemporaryFileSystem",
                         "BindPaths", "BindReadOnlyPaths", "MountFlags", "PrivateMounts",
                         "ProtectKernelModules", "ProtectControlGroups", "RootDirectory")


def unit():
    p = configparser.ConfigParser(strict=False, interpolation=None)
    p.optionxform = str
    p.read(UNIT)
    return p


def test_service_is_notify_with_watchdog_and_restart():
    s = unit()["Service"]
    assert s["Type"] == "notify"
    assert s["WatchdogSec"].rstrip("s").isdigit()
    assert s["Restart"] in ("on-failure", "always")
    assert s["ExecStart"].endswith("update-agent run")


def test_stop_lets_the_step_finish():
    s = unit()["Service"]
    assert s["KillMode"] == "mixed"
    minutes = int(s["TimeoutStopSec"].rstrip("min"))
    assert minutes * 60 > 1800, "longer than the default hook_timeout, the longest step"


def test_no_private_mount_namespace():
    s = unit()["Service"]
    assert not [o for o in PRIVATE_MOUNT_OPTIONS if o in s]
