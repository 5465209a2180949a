"""Open any supported node image as a read-only directory tree.

detect() names an image's format from its first bytes, never its file name.
open_tree() yields the host path of the image's root filesystem and, on the
way out (error or not), undoes every mount, loop device and temp dir.

Each format module offers NAMES, sniff(head, path) -> name or None, and
open_tree(path, system, work_dir, fmt), a context manager yielding the tree.
"""

import contextlib
import logging
import os

from update_agent.errors import BadInput
from update_agent.images.formats import directory, fsimage, loop, qcow2, rawdisk, tarball

LOG = logging.getLogger(__name__)

# Sniffed in this order: filesystem magics before the partition table, since
# a filesystem may well end its first sector with the MBR's 0x55AA.
MODULES = (directory, qcow2, fsimage, tarball, rawdisk)
FORMATS = tuple(name for module in MODULES for name in module.NAMES)
_MODULE_FOR = {name: module for module in MODULES for name in module.NAMES}

HEAD_SIZE = 4096  # covers every magic and superblock field the modules read


def detect(path):
    """The format name of the image at path; BadInput if it is none we know."""
    if os.path.isdir(path):
        head = b""
    elif not os.path.exists(path):
        raise BadInput("image %s: no such file or directory" % path)
    elif not os.path.isfile(path):
        raise BadInput("image %s: not a regular file or directory" % path)
    else:
        with open(path, "rb") as f:
            head = f.read(HEAD_SIZE)
        if not head:
            raise BadInput("image %s: empty file" % path)
    for module in MODULES:
        name = module.sniff(head, path)
        if name:
            return name
    size = os.path.getsize(path)
    hint = "; too short to hold any known header, truncated?" if size < HEAD_SIZE else ""
    raise BadInput("image %s: unrecognised format (%d bytes, first bytes %s%s)"
                   % (path, size, head[:16].hex(" "), hint))


@contextlib.contextmanager
def open_tree(path, system, work_dir, allowed=None):
    """Yield the host path of a read-only tree of the image's root filesystem.

    Temporary mounts, loop devices and files live under work_dir; allowed
    optionally limits the formats accepted (qcow2 uses it for its content).
    """
    path = os.path.abspath(path)
    work_dir = os.path.abspath(work_dir)
    fmt = detect(path)
    if allowed is not None and fmt not in allowed:
        raise BadInput("image %s: %s is not accepted here (only %s)" % (path, fmt, ", ".join(allowed)))
    LOG.debug("opening %s image %s", fmt, path)
    with _MODULE_FOR[fmt].open_tree(path, system, work_dir, fmt) as tree:
        yield tree


def cleanup(system, work_dir, mounts):
    """Release what a killed run left under work_dir (mounts, loop devices, trees)."""
    loop.cleanup_stale(system, work_dir, mounts, [os.path.dirname(os.path.abspath(work_dir))])
