"""Lease slots: N tooz locks per group, held on the engine's session lease.

For work done while the holder stays up (an in-place update, `slot hold`): if
the holder crashes, its lease expires and the slot frees itself. tooz's
heartbeat thread keeps the lease alive while the holder lives.
"""

import contextlib
import logging
import time

from update_agent.errors import AgentError, Interrupted

LOG = logging.getLogger(__name__)


def _coordinator(url, node):
    try:
        from tooz import coordination
    except ImportError:
        raise AgentError("coordination backend %s needs tooz installed" % url)
    try:
        c = coordination.get_coordinator(url, node.encode())
        c.start(start_heart=True)
    except coordination.ToozError as e:
        raise AgentError("coordination backend %s: %s" % (url, e))
    return c


@contextlib.contextmanager
def held(url, node, group, max_holders, timeout, sleep=None, poll=0.5, should_stop=None,
         monotonic=time.monotonic):
    sleep = sleep or time.sleep
    should_stop = should_stop or (lambda: False)
    coordinator = _coordinator(url, node)
    lock = None
    try:
        deadline = monotonic() + timeout
        waited = False
        while lock is None:
            for i in range(max_holders):
                candidate = coordinator.get_lock(("update-agent/%s/slot-%d" % (group, i)).encode())
                if candidate.acquire(blocking=False):
                    lock = candidate
                    LOG.info("holding lease slot %d of %d in group %s", i + 1, max_holders, group)
                    break
            if lock is None:
                if not waited:
                    LOG.info("waiting for a lease slot in group %s: all %d are held", group, max_holders)
                    waited = True
                if should_stop():
                    raise Interrupted("stopped while waiting for a slot in group %s, as asked; "
                                      "nothing was changed" % group)
                if monotonic() >= deadline:
                    raise AgentError("no slot in group %s after %ds (all %d held)"
                                     % (group, timeout, max_holders))
                sleep(poll)
        yield lock
    finally:
        if lock is not None:
            try:
                lock.release()
            except Exception as e:  # the lease may be gone already: the slot is free anyway
                LOG.warning("releasing the slot of group %s: %s", group, e)
        coordinator.stop()
