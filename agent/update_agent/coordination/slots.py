"""Pure: a counting semaphore of reboot slots, as one record per group.

A reboot slot must outlive the reboot, so it is a holder record keyed by node
id (locksmith's etcd semaphore, airlock's FleetLock), not a lock on a session
lease that would expire while the node is down. The record is updated with a
compare-and-swap on the engine (etcd, Redis, a file), through the functions
here, which decide and never talk to anything.

One budget per group: reboots, in-place updates and `slot hold` all take their
slot from the same record. A reboot's slot has no end (it must outlive the
reboot); the others are leases: "expires" says until when, the holder renews
it while it works, and a holder that died is dropped once it is past (by
whoever takes a slot next), so a crash frees its slot.

State: {"max": N, "holders": {node: since}, "expires": {node: until},
        "failures": n, "frozen": "" or why}
"""


HELD_SINCE_REBOOT = "holds the slot its reboot took; it stays held until an update succeeds"


def empty(max_holders):
    return {"max": max_holders, "holders": {}, "expires": {}, "failures": 0, "frozen": ""}


def normal(state, max_holders):
    state = dict(empty(max_holders), **(state or {}))
    state["holders"] = dict(state["holders"])
    state["expires"] = dict(state["expires"])
    state["max"] = max_holders  # the configured size wins; holders over it drain off
    return state


def _drop_expired(state, now):
    for node, until in list(state["expires"].items()):
        if until < now:
            state["holders"].pop(node, None)
            del state["expires"][node]
    return state


def take(state, node, max_holders, now, until=None):
    """(new state, granted, why). Idempotent: a holder asking again keeps its slot.
    until: a lease's end (in-place updates, slot hold); None: a reboot's, no end."""
    state = _drop_expired(normal(state, max_holders), now)
    if node in state["holders"]:
        if until is None or node in state["expires"]:
            if until is not None:
                state["expires"][node] = until
            return state, True, "already holds a slot"
        # the slot an unhealthy reboot took: the work goes on under it, which stays held
        return state, True, HELD_SINCE_REBOOT
    if state["frozen"]:
        return state, False, "group is stopped: %s (clear it with `update-agent slot clear`)" % state["frozen"]
    if len(state["holders"]) >= max_holders:
        return state, False, "all %d slots are held by %s" % (
            max_holders, ", ".join(sorted(state["holders"])))
    state["holders"][node] = now
    if until is not None:
        state["expires"][node] = until
    return state, True, "slot taken (%d of %d)" % (len(state["holders"]), max_holders)


def renew(state, node, max_holders, until):
    """(new state, still held): a lease holder's heartbeat."""
    state = normal(state, max_holders)
    if node not in state["holders"]:
        return state, False
    if node in state["expires"]:
        state["expires"][node] = until
    return state, True


def release(state, node, max_holders):
    state = normal(state, max_holders)
    state["holders"].pop(node, None)
    state["expires"].pop(node, None)
    return state


def overdue(state, now, max_hold):
    """Holders past max_hold seconds: reported, never taken over."""
    return sorted(n for n, since in (state or {}).get("holders", {}).items() if now - since > max_hold)


def failed(state, node, max_holders, threshold):
    """Count a failed update; at threshold the group stops taking slots."""
    state = normal(state, max_holders)
    state["failures"] += 1
    if threshold and state["failures"] >= threshold and not state["frozen"]:
        state["frozen"] = "%d failed updates, the last on %s" % (state["failures"], node)
    return state


def clear(state, max_holders):
    state = normal(state, max_holders)
    state["failures"], state["frozen"] = 0, ""
    return state
