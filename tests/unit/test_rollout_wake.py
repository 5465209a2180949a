"""Whom a node wakes when its step ends: the waiting members the stage rules
would let start now, longest waiting first, and nobody while the rollout is
stopped. A node left out still takes its turn at its own next look."""

from update_agent.decide.rollout import policy as policies, stages
from update_agent.decide.rollout.stages import MemberState

NODES = ["n%02d" % i for i in range(1, 9)]


def members(waiting_since, state=MemberState.WAITING, others=()):
    """{node: member record}: the waiting ones with their since, the others idle."""
    found = {n: {"state": str(state), "since": t} for n, t in waiting_since.items()}
    found.update({n: {"state": str(MemberState.IDLE), "since": 0} for n in others})
    return found


def rollout(*stage_list):
    return policies.parse({"stages": list(stage_list)})


def started(record, stage, nodes, targets, now=0):
    for n in nodes:
        record, verdict = stages.take(record, stage, n, targets, now)
        assert isinstance(verdict, stages.Granted)
    return record


def test_a_freed_place_wakes_the_member_that_has_waited_longest():
    p = rollout({"name": "computes", "group": "compute", "max_parallel": 2})
    stage = p.stages[0]
    record = started(None, stage, ["n01", "n02"], NODES)
    record = stages.finish(record, stage, "n01", True, "", 10, NODES)
    live = {"compute": dict(members({"n05": 3, "n03": 7, "n04": 5}, others=["n06", "n07", "n08"]),
                            n01={"state": "idle"}, n02={"state": "running"})}
    assert stages.to_wake(p, [record], live, None, 10) == ["n05"]


def test_a_finished_stage_wakes_the_next_stage_group_up_to_its_limit():
    p = rollout({"name": "migrate", "group": "ctl", "scope": "one"},
                {"name": "conductors", "group": "cond", "max_parallel": "100%"},
                {"name": "computes", "group": "compute", "max_parallel": 1})
    ctl = ["c1", "c2", "c3"]
    first = started(None, p.stages[0], ["c1"], ctl)
    first = stages.finish(first, p.stages[0], "c1", True, "", 5, ctl)
    live = {"ctl": members({"c2": 1, "c3": 2}), "cond": members({"d1": 1, "d2": 2, "d3": 3}),
            "compute": members({"x1": 0, "x2": 0})}
    # the one-node stage is done: every conductor may start; the computes' stage is not open yet
    assert stages.to_wake(p, [first], live, None, 5) == ["d1", "d2", "d3"]


def test_a_one_node_stage_wakes_exactly_one():
    p = rollout({"name": "migrate", "group": "ctl", "scope": "one"})
    live = {"ctl": members({"c1": 4, "c2": 2, "c3": 9})}
    assert stages.to_wake(p, [None], live, None, 5) == ["c2"]


def test_nobody_is_woken_while_a_stage_or_the_rollout_is_halted():
    p = rollout({"name": "computes", "group": "compute", "max_parallel": 2, "halt_after": 1})
    stage = p.stages[0]
    record = started(None, stage, ["n01"], NODES)
    halted = stages.finish(record, stage, "n01", False, "health check failed", 10, NODES)
    live = {"compute": dict(members({"n02": 1, "n03": 2}), n01={"state": "running", "since": 0})}
    assert halted["halted"]
    assert stages.to_wake(p, [halted], live, None, 10) == []
    by_hand = {"halted": "bad image", "halted_by": "ops", "image_id": "img-B", "policy": p.digest}
    assert stages.to_wake(p, [record], live, by_hand, 10) == []
    assert stages.to_wake(p, [record], live, None, 10) == ["n02"]


def test_a_full_wave_wakes_nobody_until_its_soak_is_over():
    p = rollout({"name": "computes", "group": "compute", "max_parallel": 4, "waves": [1, "100%"],
                 "soak": 60})
    stage = p.stages[0]
    record = started(None, stage, ["n01"], NODES)
    record = stages.finish(record, stage, "n01", True, "", 100, NODES)
    live = {"compute": members({n: i for i, n in enumerate(NODES[1:])})}
    assert stages.to_wake(p, [record], live, None, 120) == []
    assert stages.to_wake(p, [record], live, None, 161) == ["n02", "n03", "n04", "n05"]


def test_members_that_are_not_waiting_or_already_took_part_are_not_woken():
    p = rollout({"name": "computes", "group": "compute", "max_parallel": 3})
    stage = p.stages[0]
    record = started(None, stage, ["n01"], NODES)
    record = stages.finish(record, stage, "n01", False, "oops", 10, NODES)  # below halt_after
    live = {"compute": dict(members({"n01": 0}), n02={"state": "running", "since": 0},
                            n03={"state": "rebooting", "since": 0})}
    assert stages.to_wake(p, [record], live, None, 10) == []
