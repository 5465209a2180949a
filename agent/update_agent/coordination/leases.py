"""Lease slots: a slot of the group's one budget (slots.py) that frees itself.

For work done while the holder stays up (an in-place update, `slot hold`): the
holder's entry in the group's slot record carries an end, which a thread renews
every third of the lease while the work goes on. If the holder dies, the entry
runs out and the next node to take a slot drops it. Reboots take their slots
from the same record, without an end, so that every kind of disruptive work
counts against the one `max_holders`.
"""

import contextlib
import logging
import threading
import time

from update_agent.coordination.slots import HELD_SINCE_REBOOT
from update_agent.errors import AgentError, Interrupted

LOG = logging.getLogger(__name__)


class _Renewal:
    """Renews the lease every third of it until stopped; says once if it fails."""

    def __init__(self, slots, ttl):
        self.slots, self.ttl = slots, ttl
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lease", daemon=True)
        self._thread.start()

    def _loop(self):
        failing = False
        while not self._stop.wait(self.ttl / 3.0):
            try:
                held = self.slots.renew(self.slots.clock() + self.ttl)
            except AgentError as e:
                if not failing:
                    LOG.warning("renewing the lease slot of group %s: %s", self.slots.group, e)
                failing = True
                continue
            if not held:
                LOG.warning("the lease slot of group %s was lost (expired, or cleared by an "
                            "operator)", self.slots.group)
            failing = False

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=30)


@contextlib.contextmanager
def held(slots, ttl, timeout, sleep=None, poll=0.5, should_stop=None, monotonic=time.monotonic):
    """Hold one slot of slots' group (a RebootSlots) as a lease of ttl seconds,
    waiting for one until timeout, or until should_stop() says to give up."""
    sleep = sleep or time.sleep
    should_stop = should_stop or (lambda: False)
    deadline = monotonic() + timeout
    waited = False
    while True:
        granted, why = slots.take(until=slots.clock() + ttl)
        if granted:
            break
        if not waited:
            LOG.info("waiting for a lease slot in group %s: %s", slots.group, why)
            waited = True
        if should_stop():
            raise Interrupted("stopped while waiting for a slot in group %s, as asked; "
                              "nothing was changed" % slots.group)
        if monotonic() >= deadline:
            raise AgentError("no slot in group %s after %ds: %s" % (slots.group, timeout, why))
        sleep(poll)
    LOG.info("holding lease slot of group %s (%s)", slots.group, why)
    if why == HELD_SINCE_REBOOT:  # not this lease's to renew or give back
        yield why
        return
    renewal = _Renewal(slots, ttl)
    try:
        yield why
    finally:
        renewal.stop()
        try:
            slots.release()
        except AgentError as e:  # it runs out on its own: the slot frees itself anyway
            LOG.warning("releasing the lease slot of group %s: %s", slots.group, e)
