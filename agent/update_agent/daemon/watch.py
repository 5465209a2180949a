"""Wait for os-collect-config's cache to change: inotify, else polling.

inotify (through libc, no extra dependency) on the cache directory wakes the
daemon within milliseconds of os-collect-config writing a file. Where inotify
is missing (or the directory does not exist yet) the watcher falls back to
comparing a stat snapshot of the directory at the poll interval.
"""

import ctypes
import errno
import logging
import os
import select
import struct

LOG = logging.getLogger(__name__)

IN_MODIFY = 0x002
IN_CLOSE_WRITE = 0x008
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
DEBOUNCE = 0.05
MASK = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MODIFY | IN_DELETE_SELF | IN_MOVE_SELF


def _libc():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_init1, libc.inotify_add_watch  # noqa: B018 - probe the symbols
        return libc
    except (OSError, AttributeError):
        return None


class CacheWatcher:
    """wait(timeout) returns True when something in the directory changed."""

    def __init__(self, directory, use_inotify=True):
        self.directory = directory
        self.fd = None
        self.use_inotify = use_inotify
        self._snapshot = self._stat()
        if use_inotify:
            self._start_inotify()

    @property
    def mode(self):
        return "inotify" if self.fd is not None else "polling"

    def _start_inotify(self):
        libc = _libc()
        if libc is None or not os.path.isdir(self.directory):
            return
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            LOG.warning("inotify unavailable (%s); polling %s", os.strerror(ctypes.get_errno()),
                        self.directory)
            return
        wd = libc.inotify_add_watch(fd, os.fsencode(self.directory), MASK)
        if wd < 0:
            LOG.warning("cannot watch %s (%s); polling", self.directory,
                        os.strerror(ctypes.get_errno()))
            os.close(fd)
            return
        self.fd = fd

    def _stat(self):
        try:
            return tuple(sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size, e.inode())
                                for e in os.scandir(self.directory)))
        except OSError:
            return None

    def _drain(self):
        changed = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    return changed
                raise
            offset = 0
            while offset + 16 <= len(data):
                _wd, mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                offset += 16 + length
                changed = True
                if mask & (IN_DELETE_SELF | IN_MOVE_SELF):
                    # the directory itself went away: fall back until it is back
                    os.close(self.fd)
                    self.fd = None
                    return True

    def wait(self, timeout, wake_fd=None):
        """Block up to timeout seconds; True if the cache changed.

        wake_fd: also return (False) as soon as it is readable (a signal arrived).
        """
        extra = [wake_fd] if wake_fd is not None else []
        if self.fd is None and self.use_inotify and os.path.isdir(self.directory):
            self._start_inotify()
            # what changed while nothing watched (the directory was missing or replaced)
            now = self._stat()
            if self.fd is not None and now != self._snapshot:
                self._snapshot = now
                return True
        if self.fd is not None:
            ready, _, _ = select.select([self.fd] + extra, [], [], max(0.0, timeout))
            if self.fd in ready and self._drain():
                # a writer's create, write and close arrive as several events: take them as one
                if self.fd is not None and select.select([self.fd], [], [], DEBOUNCE)[0]:
                    self._drain()
                self._snapshot = self._stat()
                return True
            return False
        select.select(extra, [], [], max(0.0, timeout))
        now = self._stat()
        if now != self._snapshot:
            self._snapshot = now
            return True
        return False

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
