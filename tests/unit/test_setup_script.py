"""tools/setup installs what the tests and tools call."""

import os
import re

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# the executables tests/ and tools/ run, by the Debian package that ships each
PROVIDERS = {
    "pgrep": "procps", "rsync": "rsync", "mkfs.ext4": "e2fsprogs", "debugfs": "e2fsprogs",
    "mkfs.xfs": "xfsprogs", "mksquashfs": "squashfs-tools", "qemu-img": "qemu-utils",
    "sfdisk": "fdisk", "losetup": "mount", "mount": "mount", "findmnt": "util-linux",
    "unshare": "util-linux", "nsenter": "util-linux", "blkid": "util-linux",
    "openssl": "openssl", "debootstrap": "debootstrap", "systemd-nspawn": "systemd-container",
    "etcd": "etcd-server", "redis-server": "redis-server", "qemu-system-x86_64": "qemu-system-x86",
    "zstd": "zstd", "tar": "tar", "chroot": "coreutils", "du": "coreutils", "dd": "coreutils",
}


def _installed():
    with open(os.path.join(PROJECT, "tools/setup")) as f:
        text = f.read()
    line = re.search(r"apt-get install ([^>]*)>", text, re.S).group(1)
    return set(line.replace("\\\n", " ").split())


def test_setup_installs_every_package_the_tests_call():
    missing = {exe: pkg for exe, pkg in PROVIDERS.items() if pkg not in _installed()}
    assert missing == {}
