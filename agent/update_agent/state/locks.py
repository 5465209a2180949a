"""flock-based locks: one agent at a time, and os-refresh-config's own lock."""

import contextlib
import errno
import fcntl
import logging
import os
import time

from update_agent.errors import AgentError

LOG = logging.getLogger(__name__)


@contextlib.contextmanager
def flock(path, what, timeout=0, poll=0.5, monotonic=time.monotonic, sleep=time.sleep):
    """Hold an exclusive flock on path; wait up to timeout seconds for it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        # O_NOFOLLOW: under --root a planted link must not make us write elsewhere
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise AgentError("cannot open lock %s: %s" % (path, e.strerror))
    try:
        deadline = monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if monotonic() >= deadline:
                    raise AgentError("%s is held by another process (lock %s)" % (what, path))
                if not waited:  # once per wait, not at every poll
                    LOG.info("waiting for %s (lock %s)", what, path)
                    waited = True
                sleep(poll)
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        yield
    finally:
        os.close(fd)
