"""A qcow2 image: converted to a temporary raw file, which is then opened."""

import contextlib
import json
import logging
import os

from update_agent.errors import AgentError, BadInput, CommandFailed
from update_agent.images.formats import loop

LOG = logging.getLogger(__name__)

NAMES = ("qcow2",)

# What a qcow2 may contain; not qcow2 again, so nesting cannot recurse.
INNER_FORMATS = ("ext4", "xfs", "squashfs", "rawdisk")


def sniff(head, path):
    return "qcow2" if head[:4] == b"QFI\xfb" else None


def _qemu_img(system, path, argv, error=AgentError):
    # -f qcow2 always: letting qemu-img probe the format is unsafe.
    try:
        return system.run(["qemu-img"] + argv[:1] + ["-f", "qcow2"] + argv[1:]).stdout
    except CommandFailed as exc:
        raise error("image %s: qemu-img %s failed: %s"
                       % (path, argv[0], (exc.stderr.strip().splitlines() or ["?"])[-1]))


def check_standalone(system, path):
    """Refuse backing/data files: they would make qemu-img read other host files."""
    info = json.loads(_qemu_img(system, path, ["info", "--output=json", path], BadInput))
    data_file = info.get("format-specific", {}).get("data", {}).get("data-file")
    external = info.get("backing-filename") or info.get("full-backing-filename") or data_file
    if external:
        raise BadInput("image %s: qcow2 refers to an external file (%s)" % (path, external))


def check_intact(system, path):
    """Refuse a truncated or corrupt qcow2: convert would read the gaps as zeros."""
    proc = system.run(["qemu-img", "check", "-q", "-f", "qcow2", path], check=False)
    if proc.returncode not in (0, 3):  # 3: leaked clusters only, harmless to a reader
        found = (proc.stdout + proc.stderr).strip().splitlines() or ["exit %d" % proc.returncode]
        raise BadInput("image %s: qcow2 is corrupt or truncated (qemu-img check: %s)" % (path, found[0]))


@contextlib.contextmanager
def open_tree(path, system, work_dir, fmt="qcow2"):
    from update_agent.images import formats  # the registry imports this module

    check_standalone(system, path)
    check_intact(system, path)
    with loop.temp_dir(work_dir, "qcow2-") as tmp, contextlib.ExitStack() as stack:
        raw = os.path.join(tmp, "image.raw")
        _qemu_img(system, path, ["convert", "-q", "-O", "raw", path, raw])
        try:
            tree = stack.enter_context(formats.open_tree(raw, system, work_dir, allowed=INNER_FORMATS))
        except AgentError as exc:
            # Name the qcow2 the operator knows, not our temporary file.
            exc.args = (str(exc).replace(raw, "%s (converted to raw)" % path),)
            raise
        yield tree
