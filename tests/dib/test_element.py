"""The diskimage-builder element, for real: one debian-minimal image is built with it.

The image is the run's one build of the element (tests/dib_image.py, the
`element_image` fixture): a bare ext4 filesystem labelled cloudimg-rootfs, the format
the agent itself applies. Here it is attached read-only and mounted in this test's
private mount namespace, and the agent is run from it with chroot.
"""

import glob
import importlib.machinery
import importlib.util
import os
import subprocess
import tempfile

import pytest

from dib_image import IMAGE_ID, mounted
from update_agent import __version__
from update_agent.apply import hooks
from update_agent.node import paths

pytestmark = pytest.mark.dib

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(PROJECT, "tools", "build-dib-image")
UNIT = os.path.join(PROJECT, "systemd", "update-agent.service")


def load_tool():
    loader = importlib.machinery.SourceFileLoader("build_dib_image", TOOL)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


class Image:
    def __init__(self, path, root, seconds, repo):
        self.path, self.root, self.seconds, self.repo = path, root, seconds, repo

    def node_path(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def resolve(self, path, depth=0):
        """PATH inside the image with its symlinks resolved inside the image."""
        assert depth < 40, "symlink loop at " + path
        parts = [p for p in path.split("/") if p]
        done = "/"
        for i, part in enumerate(parts):
            here = os.path.join(done, part)
            full = self.node_path(here)
            if os.path.islink(full):
                target = os.readlink(full)
                target = target if target.startswith("/") else os.path.join(done, target)
                rest = "/".join(parts[i + 1:])
                return self.resolve(os.path.normpath(os.path.join(target, rest)), depth + 1)
            done = here
        return self.node_path(done)

    def chroot(self, *argv):
        return subprocess.run(["chroot", self.root] + list(argv), capture_output=True,
                              text=True, timeout=120)


@pytest.fixture(scope="module")
def image(element_image):
    work = tempfile.mkdtemp(prefix="test-dib-element.")
    try:
        with mounted(element_image.path, os.path.join(work, "root")) as root:
            yield Image(element_image.path, root, element_image.seconds, element_image.repo)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", work], check=False)


def test_image_is_a_rootfs_the_agent_applies(image):
    probe = subprocess.run(["blkid", "--probe", "--output", "export", image.path],
                           capture_output=True, text=True, check=True).stdout.split()
    assert "TYPE=ext4" in probe and "LABEL=cloudimg-rootfs" in probe, probe
    # the agent's plan needs the image's kernel
    assert glob.glob(image.node_path("/boot/vmlinuz-*")), os.listdir(image.node_path("/boot"))


def test_build_publishes_the_image_to_the_repository(image):
    # --publish: the built image's manifest is the mounted image's, byte for byte
    from update_agent.decide import entries, repo_format
    from update_agent.node import manifest
    with open(os.path.join(image.repo, repo_format.record_path(IMAGE_ID))) as f:
        record = repo_format.record_loads(f.read(), IMAGE_ID)
    assert record["manifest"] == entries.digest_of(manifest.build(image.root, entries.Excluder(()))[0])


def test_unit_is_installed_and_enabled(image):
    link = image.node_path("/etc/systemd/system/multi-user.target.wants/update-agent.service")
    assert os.path.islink(link), "update-agent.service is not enabled"
    unit = image.resolve("/etc/systemd/system/multi-user.target.wants/update-agent.service")
    assert unit.startswith(image.root + "/") and os.path.isfile(unit), os.readlink(link)
    with open(unit) as got, open(UNIT) as want:
        assert got.read() == want.read()
    assert os.path.samefile(unit, image.resolve("/usr/lib/systemd/system/update-agent.service"))


def test_agent_runs_in_a_chroot_of_the_image(image):
    agent = image.node_path("/opt/update-agent/bin/update-agent")
    assert os.access(agent, os.X_OK)
    proc = image.chroot("/opt/update-agent/bin/update-agent", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "update-agent " + __version__
    # the shipped example configuration parses (every key at its default)
    proc = image.chroot("/opt/update-agent/bin/update-agent", "config")
    assert proc.returncode == 0, proc.stderr
    assert "state_dir = /var/lib/update-agent" in proc.stdout
    # structured journal logging: the systemd extra, built on the host
    proc = image.chroot("/opt/update-agent/bin/python", "-c", "import systemd.journal")
    assert proc.returncode == 0, proc.stderr


def test_tools_the_agent_calls_are_in_the_image(image):
    proc = image.chroot("/bin/sh", "-c", "for t in rsync mount umount losetup blkid sfdisk "
                        "sync tar zstd qemu-img systemctl; do command -v $t || exit 1; done")
    assert proc.returncode == 0, "missing in the image after: " + proc.stdout
    # hooks run through dib-run-parts, found beside the agent's interpreter
    assert os.access(image.node_path("/opt/update-agent/bin/dib-run-parts"), os.X_OK)


def test_os_refresh_config_hooks_are_installed_and_trusted(image):
    orc = "/usr/libexec/os-refresh-config"
    shipped = [p for p in sorted(glob.glob(os.path.join(PROJECT, "hooks", "*.d", "*")))
               if os.path.isfile(p)]
    phases = sorted({os.path.basename(os.path.dirname(p)) for p in shipped})
    for path in shipped:
        phase, name = path.split(os.sep)[-2:]
        got = image.node_path("%s/%s/%s" % (orc, phase, name))
        st = os.lstat(got)
        assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o755), got
        with open(got, "rb") as f, open(path, "rb") as want:
            assert f.read() == want.read(), got
    for phase in phases:
        # the agent's own check, then the names dib-run-parts will run
        node = paths.NodePaths(root=image.root, orc_base=orc)
        assert hooks.check_phase_dir(node, phase[:-2]) == image.node_path("%s/%s" % (orc, phase))
        proc = image.chroot("/opt/update-agent/bin/dib-run-parts", "--list",
                            "%s/%s" % (orc, phase))
        assert proc.returncode == 0, proc.stderr
        listed = sorted(os.path.basename(p) for p in proc.stdout.split())
        assert listed == sorted(os.path.basename(p) for p in shipped
                                if os.path.basename(os.path.dirname(p)) == phase)


def test_node_files(image):
    with open(image.node_path("/etc/image_id")) as f:
        assert f.read() == IMAGE_ID + "\n"
    assert os.path.isfile(image.node_path("/etc/update-agent/update-agent.conf"))
    assert os.path.isdir(image.node_path("/etc/update-agent/conf.d"))
    state = os.stat(image.node_path("/var/lib/update-agent"))
    assert (state.st_uid, state.st_mode & 0o777) == (0, 0o700)
    assert os.path.isfile(image.node_path("/usr/share/doc/update-agent/README.md"))
    # the wheels and other build inputs stay out of the image
    assert not os.path.exists(image.node_path("/tmp/in_target.d"))


def test_read_only_root_option_mounts_root_read_only_and_the_writable_places_apart(image):
    # the run builds with DIB_UPDATE_AGENT_READONLY_ROOT=1 (tests/dib_image.py)
    with open(image.node_path("/etc/fstab")) as f:
        mounts = {fields[1]: fields for fields in (line.split() for line in f)
                  if fields and not fields[0].startswith("#")}
    assert mounts["/"][:4] == ["LABEL=cloudimg-rootfs", "/", "ext4", "ro"], mounts["/"]
    for path in ("/tmp", "/var/tmp", "/var/log", "/var/lib/systemd", "/var/lib/os-collect-config"):
        assert mounts[path][2] == "tmpfs", mounts.get(path)
        assert os.path.isdir(image.node_path(path)), path
    state = mounts["/var/lib/update-agent"]
    assert state[0] == "LABEL=ua-state" and "nofail" in state[3].split(","), state


def test_collect_extra_installs_os_collect_config_and_its_unit(image):
    for tool in ("os-collect-config", "os-refresh-config", "os-apply-config", "dib-run-parts"):
        link = image.node_path("/usr/local/bin/" + tool)
        assert os.path.islink(link), tool
        assert os.readlink(link) == "/opt/update-agent/bin/" + tool
    assert os.path.islink(image.node_path(
        "/etc/systemd/system/multi-user.target.wants/os-collect-config.service"))
    proc = image.chroot("/usr/local/bin/os-collect-config", "--help")
    assert proc.returncode == 0, proc.stderr


def test_mirrors_come_from_apt_sources():
    tool = load_tool()
    with tempfile.TemporaryDirectory() as etc:
        os.makedirs(os.path.join(etc, "sources.list.d"))
        with open(os.path.join(etc, "sources.list"), "w") as f:
            f.write("# deb http://commented.example/debian bookworm main\n"
                    "deb [arch=amd64 signed-by=/k.gpg] http://one-line.example/debian "
                    "bookworm-updates main\n"
                    "deb-src http://src.example/debian bookworm main\n")
        with open(os.path.join(etc, "sources.list.d", "debian.sources"), "w") as f:
            f.write("Types: deb\nURIs: http://mirror.example/debian\n"
                    "Suites: bookworm bookworm-updates\nComponents: main\n\n"
                    "Types: deb\n# a comment\nURIs: http://mirror.example/debian-security/\n"
                    "Suites: bookworm-security\nComponents: main\n\n"
                    "Types: deb\nEnabled: no\nURIs: http://disabled.example/debian\n"
                    "Suites: bookworm\n")
        with open(os.path.join(etc, "sources.list.d", "x.list.disabled-by-farm"), "w") as f:
            f.write("deb http://ignored.example/debian bookworm main\n")
        entries = tool.apt_sources(etc)
    assert entries == [
        ("http://one-line.example/debian", "bookworm-updates"),
        ("http://mirror.example/debian", "bookworm"),
        ("http://mirror.example/debian", "bookworm-updates"),
        ("http://mirror.example/debian-security/", "bookworm-security")]
    env = {k: os.environ.pop(k) for k in ("DIB_DISTRIBUTION_MIRROR", "DIB_DEBIAN_SECURITY_MIRROR")
           if k in os.environ}
    try:
        tried = []

        def check(uri, suite):
            tried.append((uri, suite))
            return "" if "mirror.example" in uri else "down"
        assert tool.choose_mirrors("bookworm", entries, check) == (
            "http://mirror.example/debian", "http://mirror.example/debian-security")
        assert tried[0] == ("http://mirror.example/debian", "bookworm")
        with pytest.raises(tool.Unreachable, match="unreachable.*down"):
            tool.choose_mirrors("bookworm", entries, lambda uri, suite: "down")
    finally:
        os.environ.update(env)
