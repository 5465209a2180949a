"""The element's image, built once per test run and shared by the tests that need it.

`tools/build-dib-image --image-id IMAGE_ID --publish REPO OUT` runs
`disk-image-create -t raw debian-minimal update-agent` (DIB_RELEASE=bookworm, with the
mirrors this machine's apt uses). The output is a bare ext4 filesystem labelled
cloudimg-rootfs, published into an object repository, built with the element's
read-only root (DIB_UPDATE_AGENT_READONLY_ROOT=1). It takes about 100 s; the
image test (tests/dib) inspects it, the booted-image test (tests/vm) boots it.

Skipped, with the reason, when the Debian archive is unreachable (or the tools are
missing); in CI a skip for missing tools is a failure.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(PROJECT, "tools", "build-dib-image")
IMAGE_ID = "img-dib-element-test"
BUILD_TIMEOUT = 1800
UNREACHABLE = 75


class Built:
    """What the build left in `work`: the raw image and the repository it was published to."""

    def __init__(self, work, seconds):
        self.work, self.seconds = work, seconds
        self.path = os.path.join(work, "out", "update-agent.raw")
        self.repo = os.path.join(work, "repo")
        self.image_id = IMAGE_ID


def missing_tools():
    dib = os.path.join(PROJECT, ".venv", "bin", "disk-image-create")
    missing = [] if os.access(dib, os.X_OK) else ["disk-image-create (pip diskimage-builder)"]
    for tool in ("debootstrap", "sudo", "chroot", "unshare", "losetup"):
        if not any(os.access(os.path.join(d, tool), os.X_OK)
                   for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin")):
            missing.append(tool)
    return missing


def run_group(argv, log_path, timeout, env=None):
    """Run ARGV in a process group of its own, output to LOG_PATH; kill the whole
    group (sudo, chroot, dpkg...) if it outlives TIMEOUT."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise


def tail(path, lines=60):
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def build(work):
    """Build and publish the element's image into WORK; skip if it cannot be built here."""
    missing = missing_tools()
    if missing:
        pytest.skip("missing for the image build (tools/setup installs them): "
                    + ", ".join(missing))
    log = os.path.join(work, "build.log")
    started = time.monotonic()
    rc = run_group([sys.executable, TOOL, "--image-id", IMAGE_ID, "--publish",
                    os.path.join(work, "repo"), os.path.join(work, "out")], log, BUILD_TIMEOUT,
                   env=dict(os.environ, DIB_UPDATE_AGENT_READONLY_ROOT="1"))
    built = Built(work, time.monotonic() - started)
    if rc == UNREACHABLE:
        pytest.skip(tail(log, 1).strip())
    assert rc == 0, "tools/build-dib-image failed (exit %d):\n%s" % (rc, tail(log))
    print("\ndiskimage-builder: debian-minimal + update-agent built in %.0f s (%d MiB)"
          % (built.seconds, os.path.getsize(built.path) >> 20))
    return built


@contextlib.contextmanager
def mounted(image, where, writable=False):
    """IMAGE (an ext4 file) mounted at WHERE in this test's private mount namespace."""
    argv = ["losetup", "--find", "--show"] + ([] if writable else ["--read-only"]) + [image]
    dev = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
    os.makedirs(where, exist_ok=True)
    try:
        subprocess.run(["mount", "-o", "rw" if writable else "ro", dev, where], check=True)
        try:
            yield where
        finally:
            subprocess.run(["umount", where], check=True)
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False)
