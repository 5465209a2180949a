"""A partitioned raw disk (MBR or GPT): its root partition, mounted read-only."""

import collections
import contextlib
import json
import logging
import os
import re

from update_agent.errors import BadInput, CommandFailed
from update_agent.images.formats import fsimage, loop

LOG = logging.getLogger(__name__)

NAMES = ("rawdisk",)

ROOT_LABELS = ("cloudimg-rootfs", "img-rootfs")
MBR_LINUX = "83"
MBR_EXTENDED = {"5", "f", "85"}
GPT_LINUX = {
    "0fc63daf-8483-4772-8e79-3d69d8477de4",  # Linux filesystem
    # Discoverable Partitions root types:
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",  # x86-64
    "44479540-f297-41b2-9af7-d131d5f0458a",  # x86
    "b921b045-1df0-41c3-af44-4c6f280d3fae",  # arm64
    "69dad710-2ce4-4e3c-b16c-21a1d49abed3",  # arm
    "72ec70a6-cf74-40e6-bd49-4bda08e8f224",  # riscv64
    "c31c45e6-3f39-412e-80fb-4809c4980599",  # ppc64le
}

Partition = collections.namedtuple("Partition", "number offset size type name")


def sniff(head, path):
    if head[512:520] == b"EFI PART" or head[510:512] == b"\x55\xaa":
        return "rawdisk"
    return None


def read_table(system, path):
    """Partitions as sfdisk reports them, with offsets and sizes in bytes."""
    try:
        out = system.run(["sfdisk", "--json", path]).stdout
        table = json.loads(out)["partitiontable"]
    except CommandFailed as exc:
        raise BadInput("image %s: cannot read partition table: %s"
                       % (path, (exc.stderr.strip().splitlines() or ["?"])[-1]))
    except (ValueError, KeyError):
        raise BadInput("image %s: sfdisk printed no partition table" % path)
    if any(str(p.get("type")).lower() == "ee" for p in table.get("partitions", [])):
        # libfdisk falls back to the protective MBR when the GPT is invalid.
        raise BadInput("image %s: GPT unreadable, only its protective MBR found (truncated or corrupt?)"
                       % path)
    sector = int(table.get("sectorsize", 512))
    parts = []
    for p in table.get("partitions", []):
        # sfdisk names partitions <image>N or <image>pN; N is the kernel's number.
        number = int(re.search(r"(\d+)$", p["node"]).group(1))
        parts.append(Partition(number, p["start"] * sector, p["size"] * sector,
                               str(p["type"]).lower(), p.get("name", "")))
    size = os.path.getsize(path)
    for p in parts:
        if p.offset + p.size > size:
            raise BadInput("image %s: truncated (partition %d ends at byte %d, file has %d)"
                           % (path, p.number, p.offset + p.size, size))
    return parts


def is_linux(part):
    return part.type == MBR_LINUX or part.type in GPT_LINUX


@contextlib.contextmanager
def partition_devices(system, path, parts):
    """Yield {partition number: block device}, read-only.

    The kernel's own partition nodes are preferred; a kernel built without
    partition-table parsers (or a host without devtmpfs) creates none, so fall
    back to one loop device per partition at its offset.
    """
    parts = [p for p in parts if p.type not in MBR_EXTENDED]
    with loop.attach(system, path, partscan=True) as disk:
        devs = {p.number: "%sp%d" % (disk, p.number) for p in parts}
        if all(os.path.exists(d) for d in devs.values()):
            yield devs
            return
    LOG.info("image %s: no kernel partition nodes; using a loop device per partition", path)
    with contextlib.ExitStack() as stack:
        yield {p.number: stack.enter_context(
            loop.attach(system, path, offset=p.offset, sizelimit=p.size)) for p in parts}


def fs_label(system, dev):
    proc = system.run(["blkid", "--probe", "--output", "export", dev], check=False)
    tags = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return tags.get("LABEL", "")


def choose_root(system, path, parts, devs):
    """The partition labelled as root, else the largest Linux partition."""
    for p in parts:
        if p.number in devs and (p.name in ROOT_LABELS or fs_label(system, devs[p.number]) in ROOT_LABELS):
            return p
    linux = [p for p in parts if is_linux(p)]
    if not linux:
        raise BadInput("image %s: no Linux partition (types: %s)"
                       % (path, ", ".join(p.type for p in parts) or "none"))
    return max(linux, key=lambda p: p.size)


@contextlib.contextmanager
def open_tree(path, system, work_dir, fmt="rawdisk"):
    parts = read_table(system, path)
    with partition_devices(system, path, parts) as devs:
        root = choose_root(system, path, parts, devs)
        with open(path, "rb") as f:
            f.seek(root.offset)
            head = f.read(fsimage.HEAD_NEEDED)
        fstype = fsimage.sniff(head, path)
        what = "%s partition %d" % (path, root.number)
        if fstype is None:
            raise BadInput("image %s: no ext4, xfs or squashfs filesystem" % what)
        fsimage.check_size(head, fstype, root.size, what)
        with fsimage.mount_device(system, devs[root.number], fstype, work_dir, what) as target:
            LOG.info("mounted %s (%s) read-only at %s", what, fstype, target)
            yield target
