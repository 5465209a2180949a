"""One budget per group (coordination/slots.py): reboot slots, which have no end, and
lease slots (in-place updates, slot hold), which run out unless renewed, counted together."""

from update_agent.coordination import slots


def test_reboots_and_leases_count_against_one_max():
    state, granted, _ = slots.take(None, "rebooting-node", 2, now=100)
    assert granted
    state, granted, _ = slots.take(state, "in-place-node", 2, now=101, until=131)
    assert granted
    state, granted, why = slots.take(state, "maintenance", 2, now=102, until=132)
    assert not granted and "rebooting-node" in why and "in-place-node" in why


def test_a_lease_past_its_end_is_dropped_by_the_next_taker_a_reboot_slot_never():
    state, _, _ = slots.take(None, "rebooting-node", 2, now=100)
    state, _, _ = slots.take(state, "died", 2, now=100, until=130)
    state, granted, _ = slots.take(state, "next", 2, now=129, until=159)
    assert not granted, "the lease has not run out yet"
    state, granted, _ = slots.take(state, "next", 2, now=131, until=161)
    assert granted
    assert sorted(state["holders"]) == ["next", "rebooting-node"]
    assert state["expires"] == {"next": 161}
    # a day later, the reboot's slot is still held: it outlives any lease
    state, granted, _ = slots.take(state, "other", 3, now=100 + 86400, until=100 + 86430)
    assert "rebooting-node" in state["holders"] and "next" not in state["holders"]


def test_renewing_keeps_a_lease_and_says_when_it_was_lost():
    state, _, _ = slots.take(None, "a", 1, now=100, until=130)
    state, held = slots.renew(state, "a", 1, until=160)
    assert held and state["expires"]["a"] == 160
    state, granted, _ = slots.take(state, "b", 1, now=150, until=180)
    assert not granted, "renewed: still a's"
    state = slots.release(state, "a", 1)
    assert state["holders"] == {} and state["expires"] == {}
    state, held = slots.renew(state, "a", 1, until=190)
    assert not held


def test_a_record_written_before_leases_existed_reads_as_reboot_slots():
    old = {"max": 1, "holders": {"n1": 100}, "failures": 0, "frozen": ""}
    state, granted, why = slots.take(old, "n2", 1, now=10 ** 9, until=10 ** 9 + 30)
    assert not granted and "n1" in why


def test_work_under_the_slot_an_unhealthy_reboot_holds_keeps_it_held():
    state, _, _ = slots.take(None, "n1", 1, now=100)  # its reboot's slot, still owed
    state, granted, why = slots.take(state, "n1", 1, now=200, until=230)
    assert granted and why == slots.HELD_SINCE_REBOOT
    assert state["expires"] == {}, "the reboot's slot does not become a lease"
