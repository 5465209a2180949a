"""A tar archive (plain, gzip or zstd), unpacked into a temporary directory."""

import contextlib
import logging
import os

from update_agent.errors import AgentError, CommandFailed
from update_agent.images.formats import loop

LOG = logging.getLogger(__name__)

NAMES = ("tar", "tar.gz", "tar.zst")

DECOMPRESS = {"tar": [], "tar.gz": ["-z"], "tar.zst": ["--zstd"]}


# what GNU tar says on the way that is no reason to fail, and how it ends when it does
WARNINGS = ("Ignoring unknown extended header keyword", "A lone zero block at", "in the future",
            "implausibly old time stamp", "Removing leading", "Record size =", "Warning:")
TRAILERS = ("Exiting with failure status due to previous errors",
            "Error is not recoverable: exiting now")


def failure_cause(stderr):
    """The line of tar's (or its decompressor's) stderr that says why it failed: the
    first that is neither a warning nor the closing line; a warning may come first."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    for line in lines:
        if not any(w in line for w in WARNINGS + TRAILERS):
            return line
    return lines[-1] if lines else "tar failed without saying why"


def sniff(head, path):
    if head[257:262] == b"ustar":
        return "tar"
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "tar.zst"
    return None


@contextlib.contextmanager
def open_tree(path, system, work_dir, fmt="tar"):
    with loop.temp_dir(work_dir, "tar-") as tree:
        # mkdtemp makes 0700; an archive without a "./" entry must still
        # yield a root that reads like one.
        os.chmod(tree, 0o755)
        # GNU tar refuses ".." members and defers links that point outside.
        argv = ["tar", "--numeric-owner", "--same-permissions", "--same-owner",
                "--xattrs", "--xattrs-include=*", "--acls"] + DECOMPRESS[fmt] + \
               ["-x", "-f", path, "-C", tree]
        try:
            system.run(argv)
        except CommandFailed as exc:
            raise AgentError("image %s: cannot unpack %s archive: %s"
                             % (path, fmt, failure_cause(exc.stderr)))
        LOG.info("unpacked %s archive %s into %s", fmt, path, tree)
        yield tree
