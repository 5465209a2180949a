"""Build a node image of any supported format from a directory tree.

For tests and the demo: build_image(tree_dir, fmt, out_path, system) writes
out_path. Everything but "xfs" works without mounting; "xfs" mounts the new
filesystem to fill it, so call it only inside a private mount namespace
(unshare -m --propagation private).

Raw disks get two partitions: a small decoy Linux partition first (an ext4
labelled "decoy" whose /etc/image_id reads "decoy"), then the root partition
holding the tree.
"""

import contextlib
import os
import shutil
import tempfile

from update_agent.images.formats import loop
from update_agent.system import System

FORMATS = ("directory", "ext4", "xfs", "squashfs", "rawdisk", "qcow2", "tar", "tar.gz", "tar.zst")

MIB = 1024 * 1024
XFS_MIN_BYTES = 300 * MIB  # mkfs.xfs refuses anything smaller

PART_TYPES = {  # (gpt, dos) partition type per role
    "linux": ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", "83"),
    "root": ("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "83"),  # GPT x86-64 root
    "data": ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "7"),   # not Linux
}
TAR_COMPRESS = {"tar": [], "tar.gz": ["-z"], "tar.zst": ["--zstd"]}


def tree_usage(tree_dir):
    """(bytes, inodes) the tree needs, rounded up per 4 KiB block."""
    total, count = 0, 1
    for dirpath, dirnames, filenames in os.walk(tree_dir):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            total += -(-st.st_size // 4096) * 4096 + 4096
            count += 1
    return total, count


def fs_bytes(tree_dir):
    """Generous filesystem size for the tree: twice its usage plus 16 MiB, whole MiB."""
    used, _ = tree_usage(tree_dir)
    return -(-(2 * used + 16 * MIB) // MIB) * MIB


def build_image(tree_dir, fmt, out_path, system=None, *, table="gpt", root_label=None,
                decoy_mb=8, part_type="linux", inner="rawdisk"):
    """Write an image of tree_dir in format fmt to out_path (replaced if present).

    rawdisk: table "gpt" or "dos"; root_label is the root fs label (None: no
    label); decoy_mb sizes the decoy partition; part_type ("linux", "root",
    "data") types both partitions. qcow2: inner is "rawdisk" or "ext4"; the
    rawdisk options apply to it.
    """
    system = system or System()
    tree_dir = os.path.abspath(tree_dir)
    out_path = os.path.abspath(out_path)
    if fmt not in FORMATS:
        raise ValueError("unknown format %r" % fmt)
    _remove(out_path)
    if fmt == "directory":
        system.run(["cp", "-a", tree_dir, out_path])
    elif fmt == "ext4":
        build_ext4(system, tree_dir, out_path, root_label)
    elif fmt == "xfs":
        build_xfs(system, tree_dir, out_path, root_label)
    elif fmt == "squashfs":
        system.run(["mksquashfs", tree_dir, out_path, "-noappend", "-quiet", "-no-progress"])
    elif fmt == "rawdisk":
        build_rawdisk(system, tree_dir, out_path, table, root_label, decoy_mb, part_type)
    elif fmt == "qcow2":
        raw = out_path + ".raw"
        try:
            build_image(tree_dir, inner, raw, system, table=table, root_label=root_label,
                        decoy_mb=decoy_mb, part_type=part_type)
            system.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, out_path])
        finally:
            _remove(raw)
    else:
        # --sort=name: the same tree always gives the same member order.
        system.run(["tar", "--numeric-owner", "--xattrs", "--acls", "--sort=name"]
                   + TAR_COMPRESS[fmt] + ["-c", "-f", out_path, "-C", tree_dir, "."])
    return out_path


def build_ext4(system, tree_dir, out_path, label=None, size=None):
    size = size or fs_bytes(tree_dir)
    inodes = max(1024, 2 * tree_usage(tree_dir)[1])
    argv = ["mkfs.ext4", "-q", "-F", "-N", inodes, "-d", tree_dir]
    if label:
        argv += ["-L", label]
    system.run(argv + [out_path, "%dk" % (size // 1024)])


def build_xfs(system, tree_dir, out_path, label=None):
    with open(out_path, "wb") as f:
        f.truncate(max(XFS_MIN_BYTES, fs_bytes(tree_dir)))
    system.run(["mkfs.xfs", "-q", "-f"] + (["-L", label] if label else []) + [out_path])
    work = os.path.dirname(out_path)
    with loop.attach(system, out_path, read_only=False) as dev, \
            loop.mount(system, dev, "xfs", ["rw"], work, out_path) as mnt:
        # "TREE/." copies the root directory's own owner and mode too.
        system.run(["cp", "-a", tree_dir + "/.", mnt + "/"])


def build_rawdisk(system, tree_dir, out_path, table, root_label, decoy_mb, part_type):
    gpt_type, dos_type = PART_TYPES[part_type]
    ptype = gpt_type if table == "gpt" else dos_type
    root_bytes = fs_bytes(tree_dir)
    decoy_start, root_start = MIB, MIB + decoy_mb * MIB
    total = root_start + root_bytes + MIB  # room for the GPT backup header
    with open(out_path, "wb") as f:
        f.truncate(total)
    script = "label: %s\n" % table + "".join(
        "start=%d, size=%d, type=%s\n" % (start // 512, size // 512, ptype)
        for start, size in ((decoy_start, decoy_mb * MIB), (root_start, root_bytes)))
    system.run(["sfdisk", "--quiet", out_path], input=script)
    with _scratch(out_path) as tmp:
        decoy_tree = os.path.join(tmp, "decoy")
        os.makedirs(os.path.join(decoy_tree, "etc"))
        with open(os.path.join(decoy_tree, "etc", "image_id"), "w") as f:
            f.write("decoy\n")
        for src, label, start, size in ((decoy_tree, "decoy", decoy_start, decoy_mb * MIB),
                                        (tree_dir, root_label, root_start, root_bytes)):
            fs = os.path.join(tmp, "part.ext4")
            _remove(fs)
            build_ext4(system, src, fs, label, size)
            system.run(["dd", "if=" + fs, "of=" + out_path, "bs=1M", "seek=%d" % (start // MIB),
                        "conv=notrunc,sparse", "status=none"])


@contextlib.contextmanager
def _scratch(out_path):
    tmp = tempfile.mkdtemp(prefix=".imagebuild-", dir=os.path.dirname(out_path))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
