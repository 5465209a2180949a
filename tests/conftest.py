"""Shared test setup: import paths, and the gate for tests that mount things.

Integration tests need root, loop devices and a private mount namespace; the
test command runs pytest under `unshare -m --propagation private`, so every
mount a test makes vanishes with the test process and never reaches the host.
"""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)
for sub in ("agent", "tools"):
    path = os.path.join(PROJECT, sub)
    if path not in sys.path:
        sys.path.insert(0, path)
sys.path.insert(0, HERE)

import mountns  # noqa: E402


def mounts_usable():
    """'' if this process may mount loop images, else why not."""
    if os.geteuid() != 0:
        return "integration tests need root (loop devices and mounts)"
    if not mountns.private_mount_namespace():
        return ("integration tests mount filesystems and must run in a private mount "
                "namespace: unshare -m --propagation private python -m pytest")
    with open("/proc/self/mountinfo") as f:
        if "shared:" in f.read():
            return "mounts would propagate to the host (shared mounts): use --propagation private"
    if subprocess.run(["losetup", "--find"], capture_output=True).returncode != 0:
        return "no free loop device"
    return ""


def pytest_collection_modifyitems(config, items):
    # CI sets this: an integration test skipped for want of mounts is a failure there.
    why = mounts_usable()
    if why and os.environ.get("UPDATE_AGENT_REQUIRE_INTEGRATION") == "1":
        raise pytest.UsageError("UPDATE_AGENT_REQUIRE_INTEGRATION=1 but " + why)


@pytest.fixture(scope="session")
def need_mounts():
    why = mounts_usable()
    if why:
        pytest.skip(why)


_SKIPPED = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _SKIPPED.append("%s: %s" % (report.nodeid, report.longrepr[-1] if isinstance(
            report.longrepr, tuple) else report.longrepr))


def pytest_sessionfinish(session, exitstatus):
    # In CI every test must run: a skip there means a tool or a kernel feature is
    # missing from the machine, and a green run would prove nothing.
    # The one skip allowed there: the whole-node and image builds need Debian's
    # archive, and say so when it cannot be reached.
    blocking = [s for s in _SKIPPED if "Debian archive unreachable" not in s]
    if os.environ.get("UPDATE_AGENT_REQUIRE_INTEGRATION") == "1" and blocking:
        sys.stderr.write("\nUPDATE_AGENT_REQUIRE_INTEGRATION=1 and %d tests were skipped:\n  %s\n"
                         % (len(blocking), "\n  ".join(blocking)))
        session.exitstatus = 1


@pytest.fixture(scope="session")
def element_image(need_mounts, tmp_path_factory):
    """The element's image, built once per run (tests/dib_image.py); removed at the end,
    diskimage-builder's build dirs and cache included."""
    import dib_image
    work = str(tmp_path_factory.mktemp("dib-element"))
    try:
        yield dib_image.build(work)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", work], check=False)
