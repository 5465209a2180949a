"""Make the root writable for an update, and read-only again after it.

Both read the root's mount as it is now, not as the plan saw it: a resumed run,
or one after a crash, finds it in whatever state the last one left.
"""

import logging

from update_agent.errors import AgentError
from update_agent.node import busy, mounts

LOG = logging.getLogger(__name__)


def root_read_only(ctx):
    m = mounts.mount_of(ctx.read_mounts(), ctx.paths.root)
    return bool(m and m.read_only)


def _remount(ctx, mode):
    ctx.system.run([ctx.system.which("mount"), "-o", "remount," + mode, ctx.paths.root])


def remount_rw(ctx):
    if root_read_only(ctx):
        LOG.info("remounting %s read-write", ctx.paths.root)
        _remount(ctx, "rw")


def remount_ro(ctx):
    if root_read_only(ctx):
        return
    ctx.system.run([ctx.system.which("sync"), "--file-system", ctx.paths.root])
    tries = max(1, ctx.config.agent.remount_retries)
    for attempt in range(tries):
        try:
            _remount(ctx, "ro")
            LOG.info("remounted %s read-only", ctx.paths.root)
            return
        except AgentError as e:
            last = e
            if attempt + 1 < tries:
                ctx.sleep(1)
    raise AgentError("cannot remount %s read-only (%s): %s"
                     % (ctx.paths.root, last, busy.describe(busy.culprits(ctx.paths.root))))


def remount_ro_if_it_was(ctx):
    """The last step of a path: read-only again, only if the update found it so."""
    if ctx.journal.root_was_ro:
        remount_ro(ctx)
