"""On a real etcd on 127.0.0.1, a node waiting for a stage step sleeps on a watch
of its wake key, and the node whose step ends wakes the ones that may start now:
they start when a place frees, not at their next poll, and a waiting fleet sends
the engine almost nothing. Redis and ZooKeeper have no watch: their nodes poll."""

import threading
import time

import pytest

from update_agent.coordination import rollouts, stores
from update_agent.decide.rollout import policy as policies
from update_agent.decide.rollout.stages import MemberState, NextKind
from update_agent.update import rollout

ONE_AT_A_TIME = {"stages": [{"name": "web", "group": "web", "max_parallel": 1}]}


def unique(name):
    return "%s-%d" % (name, time.time_ns())


def gates(url, names, policy=ONE_AT_A_TIME):
    """Gates of a group of their own, for a rollout of its own (image IMAGE[group])."""
    group = unique("web")
    IMAGE[group] = unique("img")
    p = policies.parse({"stages": [dict(policy["stages"][0], group=group)]})
    return [rollout.Gate(rollouts.for_url(url, time.time), p, n, group, time.time, 30, 600)
            for n in names]


def waiting_turn(gate, timeout):
    """Start gate.wait_turn(timeout) in a thread; (thread, [its result])."""
    got = []
    t = threading.Thread(target=lambda: got.append(gate.wait_turn(timeout)), daemon=True)
    t.start()
    return t, got


IMAGE = {}


def enter(gate):
    gate.register("img-A", MemberState.WAITING)
    return gate.enter(IMAGE[gate.group])


def test_a_waiting_node_is_woken_when_the_step_before_it_ends(etcd):
    a, b = gates(etcd, ["a", "b"])
    turn = enter(a)
    assert isinstance(turn, rollout.Turn)
    assert enter(b).kind == NextKind.WAIT
    t, got = waiting_turn(b, 120)
    t.join(1.0)
    assert t.is_alive() and not got, "nothing ended yet: b sleeps on its watch"
    a.finish(turn, True)
    t.join(60)
    assert got == [stores.Watched.CHANGED]
    assert isinstance(enter(b), rollout.Turn)


def test_a_wake_sent_before_the_watch_starts_is_not_lost(etcd):
    a, b = gates(etcd, ["a", "b"])
    turn = enter(a)
    assert enter(b).kind == NextKind.WAIT  # b's look armed its watch from here
    a.finish(turn, True)  # and a wakes it before b watches
    assert b.wait_turn(60) == stores.Watched.CHANGED


def test_a_node_not_woken_looks_again_when_its_watch_times_out(etcd):
    a, b, c = gates(etcd, ["a", "b", "c"])
    turn = enter(a)
    enter(b), enter(c)  # b waited first: a's end wakes b, not c
    c_waits, c_got = waiting_turn(c, 3)
    a.finish(turn, True)
    assert b.wait_turn(60) == stores.Watched.CHANGED
    c_waits.join(30)
    assert c_got == [stores.Watched.TIMED_OUT]


def test_a_heartbeat_on_etcd_renews_the_members_lease_without_writing_it(etcd):
    records = rollouts.for_url(etcd, time.time)
    group = unique("g")
    gate = rollout.Gate(records, None, "beating", group, time.time, 2, 600)
    gate.register("img-A", MemberState.IDLE)
    written = records.members(group)["beating"]
    registered = time.monotonic()
    while time.monotonic() - registered < 5:  # past the 2 s ttl twice over
        time.sleep(0.5)
        gate.beat()
        assert records.members(group).get("beating") == written, "kept alive, and not rewritten"
    time.sleep(3)
    assert "beating" not in records.members(group), "no beat: the lease runs out"


@pytest.mark.parametrize("engine", ["redis_url", "zookeeper"])
def test_engines_without_a_watch_leave_the_node_to_poll(engine, request):
    url = request.getfixturevalue(engine)
    a, b = gates(url, ["a", "b"])
    turn = enter(a)
    assert enter(b).kind == NextKind.WAIT
    assert b.wait_turn(60) is None
    a.finish(turn, True)
    assert isinstance(enter(b), rollout.Turn)
