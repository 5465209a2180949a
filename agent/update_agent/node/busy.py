"""Who keeps a filesystem busy: the culprits to name when remount,ro fails.

Linux refuses remount,ro while a file on it is open for writing, or while a
deleted inode is still open or mapped by a process.
"""

import logging
import os

import psutil

from update_agent.node import processes

LOG = logging.getLogger(__name__)


def _write_access(pid, fd):
    try:
        with open("/proc/%d/fdinfo/%s" % (pid, fd), encoding="ascii") as f:
            for line in f:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8) & os.O_ACCMODE != os.O_RDONLY
    except (OSError, ValueError, IndexError):
        pass
    return False


def _open_files(pid, dev):
    """(path, why) of the files on device dev that pid holds in a way that blocks
    remount,ro: open for writing, or deleted (an orphan inode) while open."""
    for fd, st in processes.open_on(pid, dev):
        try:
            path = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if _write_access(pid, fd):
            yield path, "open for writing"
        elif st.st_nlink == 0:
            yield path.removesuffix(" (deleted)"), "holds a deleted file open"


def _deleted_maps(pid, dev):
    """Files on dev that pid maps and that are deleted everywhere (orphan inodes)."""
    found = set()
    for fields in processes.maps_on(pid, dev):
        if not fields[5].endswith(" (deleted)"):
            continue
        # a replaced file the agent pinned is "(deleted)" here but still linked;
        # map_files names ranges without maps' zero padding (a non-PIE exe at 0x400000)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        try:
            if os.stat("/proc/%d/map_files/%x-%x" % (pid, start, end)).st_nlink > 0:
                continue
        except OSError:
            pass
        found.add(fields[5][:-len(" (deleted)")])
    return found


def culprits(root, limit=20):
    """[(pid, unit, file, why)] for processes keeping root's filesystem busy
    (files on other filesystems mounted below it, /run for one, do not count)."""
    dev = os.stat(os.path.realpath(root)).st_dev
    found = []
    for pid in psutil.pids():
        for path, why in sorted(set(_open_files(pid, dev))):  # one line for dup'ed fds
            found.append((pid, processes.unit_of(pid), path, why))
        for path in sorted(_deleted_maps(pid, dev)):
            found.append((pid, processes.unit_of(pid), path, "maps a deleted file"))
        if len(found) >= limit:
            break
    return found[:limit]


def describe(found):
    if not found:
        return "no process found holding files open for writing or deleted files"
    return "; ".join("pid %d%s %s (%s)" % (pid, " [%s]" % unit if unit else "", path, why)
                     for pid, unit, path, why in found)
