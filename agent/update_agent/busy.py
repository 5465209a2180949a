"""Who keeps a filesystem busy: the culprits to name when remount,ro fails.

Linux refuses remount,ro while a file on it is open for writing, or while a
deleted inode is still open or mapped by a process.
"""

import logging
import os
import stat

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
    fd_dir = "/proc/%d/fd" % pid
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return
    for fd in fds:
        try:
            st = os.stat(os.path.join(fd_dir, fd))
            if st.st_dev != dev or not stat.S_ISREG(st.st_mode):
                continue
            path = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if _write_access(pid, fd):
            yield path, "open for writing"
        elif st.st_nlink == 0:
            yield path.removesuffix(" (deleted)"), "holds a deleted file open"


def _deleted_maps(pid, dev):
    """Files on dev that pid maps and that are deleted everywhere (orphan inodes)."""
    try:
        with open("/proc/%d/maps" % pid, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    found = set()
    for line in lines:
        fields = line.split(None, 5)
        if len(fields) < 6 or fields[4] == "0" or not fields[5].endswith(" (deleted)"):
            continue
        major, minor = (int(x, 16) for x in fields[3].split(":"))
        if os.makedev(major, minor) != dev:
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
            found.append((pid, _unit(pid), path, why))
        for path in sorted(_deleted_maps(pid, dev)):
            found.append((pid, _unit(pid), path, "maps a deleted file"))
        if len(found) >= limit:
            break
    return found[:limit]


def describe(found):
    if not found:
        return "no process found holding files open for writing or deleted files"
    return "; ".join("pid %d%s %s (%s)" % (pid, " [%s]" % unit if unit else "", path, why)
                     for pid, unit, path, why in found)
