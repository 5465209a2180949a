"""Fleet coordination: only a few nodes of a group disrupted at once.

One budget of `max_holders` slots per group, one holder record on etcd, Redis,
ZooKeeper or a file (stores.py, decided in slots.py), or a FleetLock server
(fleetlock.py), for every kind of disruptive work:
  * reboot slots outlive a reboot: released by the node once it is back and checked;
  * lease slots (in-place updates, `update-agent slot hold`) carry an end their
    holder renews, so a crashed holder's slot frees itself (leases.py).
"""

from update_agent.coordination import fleetlock, keys, leases, slots, stores


class RebootSlots:
    """The group's slot record on a store (reboot and lease slots alike); the same
    interface as fleetlock.Client."""

    def __init__(self, store, group, max_holders, node, clock, threshold=0):
        self.store, self.group, self.max, self.node = store, group, max_holders, node
        self.clock, self.threshold = clock, threshold
        self.key = keys.slot(group)

    def take(self, until=None):
        """until: a lease's end; None: a reboot's slot, which has none."""
        return stores.update(self.store, self.key, lambda s: _pair(
            slots.take(s, self.node, self.max, self.clock(), until)))

    def renew(self, until):
        """A lease holder's heartbeat; False if the slot is no longer held."""
        return stores.update(self.store, self.key,
                             lambda s: slots.renew(s, self.node, self.max, until))

    def release(self):
        stores.update(self.store, self.key,
                      lambda s: (slots.release(s, self.node, self.max), None))

    def failed(self):
        stores.update(self.store, self.key,
                      lambda s: (slots.failed(s, self.node, self.max, self.threshold), None))

    def clear(self):
        stores.update(self.store, self.key, lambda s: (slots.clear(s, self.max), None))

    def state(self):
        return slots.normal(stores.read(self.store, self.key), self.max)


def _pair(result):
    state, granted, why = result
    return state, (granted, why)


def is_fleetlock(url):
    return fleetlock.is_server(url)


def reboot_slots(config, node, clock, group=None, max_holders=None, http=None):
    """http: the agent's Http (its CA bundle) for a FleetLock server."""
    group = group or config.group
    n = max_holders or config.max_holders
    if is_fleetlock(config.backend):
        return fleetlock.Client(config.backend, group, node, opener=http)
    return RebootSlots(stores.for_url(config.backend), group, n, node, clock,
                       config.failure_threshold)


def lease_slot(config, node, clock, group=None, max_holders=None, timeout=None, sleep=None,
               should_stop=None, http=None):
    """A context manager holding one lease slot of the group (waits for one, until
    the timeout or should_stop() says to give up: errors.Interrupted)."""
    timeout = timeout if timeout is not None else config.slot_timeout
    if is_fleetlock(config.backend):
        return fleetlock.held(fleetlock.Client(config.backend, group or config.group, node, opener=http),
                              timeout, should_stop=should_stop)
    return leases.held(reboot_slots(config, node, clock, group, max_holders), config.lease_ttl,
                       timeout, sleep, should_stop=should_stop)
