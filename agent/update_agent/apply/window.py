"""A brief read-write window on a read-only root, for os-refresh-config's own runs.

A metadata change without a new image still has its configuration rendered:
os-collect-config runs os-refresh-config, whose configure.d (os-apply-config) writes
into /etc. On a read-only root the hooks the agent ships open this window in
pre-configure.d and close it at the end of migration.d, or in error.d. All of that runs
under os-refresh-config's lock, which the agent's updates take too, so an update never
meets an open window. The marker in /run makes the window the agent's to close: a root
that was writable already is left as it is.
"""

import errno
import os

from update_agent.apply import remount
from update_agent.errors import AgentError

MARKER = "configure-window"


def _marker(ctx):
    return os.path.join(ctx.paths.run_dir, MARKER)


def open_window(ctx, mixed=""):
    """Make the root writable for os-refresh-config's run: True if this opened it.

    mixed: what an unfinished update left on the root (journal.mixed_root), "" if
    nothing. No configure phase may render configuration over a half-synced root."""
    if mixed:
        raise AgentError("the root is %s: not opening it for os-refresh-config; the agent's "
                         "next run finishes that update" % mixed)
    if not remount.root_read_only(ctx):
        return False
    marker = _marker(ctx)
    os.makedirs(os.path.dirname(marker), mode=0o700, exist_ok=True)
    # before the remount: a close after a half-done open still closes
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    os.close(fd)
    remount.remount_rw(ctx)
    return True


def close_window(ctx):
    """Read-only again if open_window made the root writable: True if this closed it."""
    marker = _marker(ctx)
    if not os.path.lexists(marker):
        return False
    remount.remount_ro(ctx)
    try:
        os.unlink(marker)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise AgentError("cannot remove %s: %s" % (marker, e.strerror))
    return True
