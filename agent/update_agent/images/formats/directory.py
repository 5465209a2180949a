"""An unpacked tree: already what every other format is opened into."""

import contextlib
import os

from update_agent.errors import BadInput

NAMES = ("directory",)


def sniff(head, path):
    return "directory" if os.path.isdir(path) else None


@contextlib.contextmanager
def open_tree(path, system, work_dir, fmt="directory"):
    if not os.path.isdir(path):
        raise BadInput("image %s: not a directory" % path)
    yield os.path.realpath(path)
