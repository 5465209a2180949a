"""Pure: a counting semaphore of reboot slots, as one record per group.

A reboot slot must outlive the reboot, so it is a holder record keyed by node
id (locksmith's etcd semaphore, airlock's FleetLock), not a lock on a session
lease that would expire while the node is down. The record is updated with a
compare-and-swap on the engine (etcd, Redis, a file), through the functions
here, which decide and never talk to anything.

State: {"max": N, "holders": {node: since}, "failures": n, "frozen": "" or why}
"""


def empty(max_holders):
    return {"max": max_holders, "holders": {}, "failures": 0, "frozen": ""}


def normal(state, max_holders):
    state = dict(empty(max_holders), **(state or {}))
    state["holders"] = dict(state["holders"])
    state["max"] = max_holders  # the configured size wins; holders over it drain off
    return state


def take(state, node, max_holders, now):
    """(new state, granted, why). Idempotent: a holder asking again keeps its slot."""
    state = normal(state, max_holders)
    if node in state["holders"]:
        return state, True, "already holds a slot"
    if state["frozen"]:
        return state, False, "group is stopped: %s (clear it with `update-agent slot clear`)" % state["frozen"]
    if len(state["holders"]) >= max_holders:
        return state, False, "all %d slots are held by %s" % (
            max_holders, ", ".join(sorted(state["holders"])))
    state["holders"][node] = now
    return state, True, "slot taken (%d of %d)" % (len(state["holders"]), max_holders)


def release(state, node, max_holders):
    state = normal(state, max_holders)
    state["holders"].pop(node, None)
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
