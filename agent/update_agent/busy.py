"""Who keeps a filesystem busy: the culprits to name when remount,ro fails.

Linux refuses remount,ro while a file on it is open for writing, or while a
deleted inode is still open or mapped by a process.
"""

import logging
import os

import psutil

LOG = logging.getLogger(__name__)


def _unit(pid):
    try:
        with open("/proc/%d/cgroup" % pid, encoding="utf-8") as f:
            for line in f:
                path = line.rstrip("\n").split(":", 2)[-1]
                leaf = path.rsplit("/", 1)[-1]
                if leaf.endswith((".service", ".scope")):
                    return leaf
    except OSError:
        pass
    return ""


def culprits(root, limit=20):
    """[(pid, unit, file, why)] for processes pinning files under root."""
    root = os.path.realpath(root)
    prefix = root.rstrip("/") + "/"
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            for f in proc.open_files():
                if f.path.startswith(prefix) and any(m in f.mode for m in "wa+"):
                    found.append((proc.pid, _unit(proc.pid), f.path, "open for writing"))
            for m in proc.memory_maps(grouped=True):
                if m.path.startswith(prefix) and m.path.endswith(" (deleted)"):
                    found.append((proc.pid, _unit(proc.pid), m.path[:-10], "maps a deleted file"))
        except (psutil.Error, OSError):
            continue
        if len(found) >= limit:
            break
    return found[:limit]


def describe(found):
    if not found:
        return "no process found holding files open for writing or deleted files"
    return "; ".join("pid %d%s %s (%s)" % (pid, " [%s]" % unit if unit else "", path, why)
                     for pid, unit, path, why in found)
