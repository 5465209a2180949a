"""A bare filesystem image (ext4, xfs, squashfs), mounted read-only via loop."""

import contextlib
import logging
import os
import struct

from update_agent.errors import BadInput
from update_agent.images.formats import loop

LOG = logging.getLogger(__name__)

NAMES = ("ext4", "xfs", "squashfs")

BASE_OPTIONS = ["ro", "nodev", "nosuid", "noexec"]
# noload/norecovery: never replay a journal, which would write to the image.
# nouuid: the node's own root may be an xfs with this very UUID.
EXTRA_OPTIONS = {"ext4": ["noload"], "xfs": ["norecovery", "nouuid"], "squashfs": []}

EXT4_MAGIC_AT = 1080
HEAD_NEEDED = 4096  # enough for every superblock field read below


def sniff(head, path):
    if head[:4] == b"hsqs":
        return "squashfs"
    if head[:4] == b"XFSB":
        return "xfs"
    if head[EXT4_MAGIC_AT:EXT4_MAGIC_AT + 2] == b"\x53\xef":  # 0xEF53, little-endian
        return "ext4"  # the ext4 driver also mounts ext2/ext3
    return None


def fs_size(head, fmt):
    """Bytes the filesystem claims to span, from its superblock; None if unknown."""
    try:
        if fmt == "squashfs":
            return struct.unpack_from("<Q", head, 40)[0]  # bytes_used
        if fmt == "xfs":
            blocksize, dblocks = struct.unpack_from(">IQ", head, 4)
            return blocksize * dblocks
        if fmt == "ext4":
            sb = 1024
            lo, = struct.unpack_from("<I", head, sb + 4)
            log_bs, = struct.unpack_from("<I", head, sb + 24)
            incompat, = struct.unpack_from("<I", head, sb + 0x60)
            hi = struct.unpack_from("<I", head, sb + 0x150)[0] if incompat & 0x80 else 0
            return ((hi << 32) | lo) * (1024 << log_bs)
    except struct.error:
        return None
    return None


def check_size(head, fmt, available, what):
    """Refuse a truncated image up front: mount errors would not say so."""
    need = fs_size(head, fmt)
    if need is None:
        raise BadInput("image %s: truncated %s image (superblock incomplete)" % (what, fmt))
    if need > available:
        raise BadInput("image %s: truncated %s image (filesystem spans %d bytes, only %d present)"
                       % (what, fmt, need, available))


@contextlib.contextmanager
def mount_device(system, dev, fmt, work_dir, what):
    options = BASE_OPTIONS + EXTRA_OPTIONS[fmt]
    with loop.mount(system, dev, fmt, options, work_dir, what) as target:
        yield target


@contextlib.contextmanager
def open_tree(path, system, work_dir, fmt=None):
    with open(path, "rb") as f:
        head = f.read(HEAD_NEEDED)
    fmt = fmt or sniff(head, path)
    if fmt not in NAMES:
        raise BadInput("image %s: not an ext4, xfs or squashfs image" % path)
    check_size(head, fmt, os.path.getsize(path), path)
    with loop.attach(system, path) as dev:
        with mount_device(system, dev, fmt, work_dir, path) as target:
            LOG.info("mounted %s image %s read-only at %s", fmt, path, target)
            yield target
