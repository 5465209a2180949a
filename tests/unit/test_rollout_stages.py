"""The stage rules: who may start a step of a stage, when, and when the fleet stops.

Records are the engine's JSON dicts; the tests play several nodes against one
record the way the engine's compare-and-swap would serialise them."""

import copy
import random

import pytest

from update_agent.decide.rollout import policy, stages
from update_agent.decide.rollout.stages import (AlreadyDone, Failed, Granted, Halted, NextKind,
                                                Wait)

NODES = ["n%02d" % i for i in range(1, 13)]


def one_stage(**keys):
    return policy.parse({"stages": [dict({"name": "computes", "group": "compute"}, **keys)]}).stages[0]


def take(record, stage, node, targets=NODES, now=0):
    return stages.take(record, stage, node, targets, now)


def run_all(record, stage, nodes, targets=NODES, now=0):
    """Each node asks in turn; the verdicts, and the record after them."""
    verdicts = {}
    for n in nodes:
        record, verdicts[n] = take(record, stage, n, targets, now)
    return record, verdicts


def granted(verdicts):
    return sorted(n for n, v in verdicts.items() if isinstance(v, Granted))


def succeed(record, stage, nodes, now, targets=NODES):
    for n in nodes:
        record = stages.finish(record, stage, n, True, "", now, targets)
    return record


def test_max_parallel_bounds_the_nodes_running_at_once():
    stage = one_stage(max_parallel=2)
    record, verdicts = run_all(None, stage, NODES[:4])
    assert granted(verdicts) == ["n01", "n02"]
    assert isinstance(verdicts["n03"], Wait)
    assert verdicts["n03"].reason == ("stage computes (group compute): max_parallel 2 of 12 nodes: "
                                      "2 started (n01, n02), waiting")
    record = succeed(record, stage, ["n01"], 10)
    record, verdict = take(record, stage, "n03")
    assert isinstance(verdict, Granted)
    assert isinstance(take(record, stage, "n04")[1], Wait)


@pytest.mark.parametrize("amount, count, allowed", [("50%", 5, 3), ("100%", 12, 12), ("10%", 12, 2),
                                                    ("1%", 3, 1), (3, 12, 3)])
def test_max_parallel_as_a_percentage_of_the_live_targets(amount, count, allowed):
    stage = one_stage(max_parallel=amount)
    targets = NODES[:count]
    _, verdicts = run_all(None, stage, targets, targets)
    assert len(granted(verdicts)) == allowed


def test_a_granted_take_records_a_started_entry_and_never_changes_its_input():
    stage = one_stage()
    before = {"nodes": {"n05": {"state": "succeeded", "at": 1, "message": ""}}, "owner": "",
              "halted": "", "finished": 0}
    kept = copy.deepcopy(before)
    record, verdict = take(before, stage, "n01", now=42)
    assert isinstance(verdict, Granted)
    assert record["nodes"]["n01"] == {"state": "started", "at": 42, "message": "", "started": 42}
    assert before == kept
    finished = stages.finish(record, stage, "n01", False, "boom", 43, NODES)
    assert record["nodes"]["n01"]["state"] == "started"
    # the finish keeps when the step began, for an operator's timeline
    assert finished["nodes"]["n01"] == {"state": "failed", "at": 43, "message": "boom",
                                        "started": 42}


def test_a_node_that_crashed_mid_step_is_granted_its_step_again():
    stage = one_stage(max_parallel=1)
    record, _ = take(None, stage, "n01")
    record, verdict = take(record, stage, "n01", now=5)
    assert isinstance(verdict, Granted) and "resumes" in verdict.reason
    assert record["nodes"]["n01"]["at"] == 0  # still the first start


def test_waves_a_canary_then_half_then_the_rest_with_a_soak_between():
    stage = one_stage(waves=[1, "50%", "100%"], max_parallel="100%", soak=60)
    record, verdicts = run_all(None, stage, NODES, now=0)
    assert granted(verdicts) == ["n01"]
    assert verdicts["n02"].reason == ("stage computes (group compute): wave 1 of 3 (1 of 12 nodes) "
                                      "is full: 1 started, waiting")
    record = succeed(record, stage, ["n01"], 100)
    _, verdict = take(record, stage, "n02", now=159)
    assert isinstance(verdict, Wait) and "soaking until 1970-01-01 00:02:40 UTC" in verdict.reason
    assert "then wave 2 opens" in verdict.reason
    record, verdicts = run_all(record, stage, NODES[1:], now=160)
    assert granted(verdicts) == NODES[1:6]  # 6 of 12 in all
    assert verdicts["n07"].reason == ("stage computes (group compute): wave 2 of 3 (50% = 6 of 12 "
                                      "nodes) is full: 5 started, waiting")
    record = succeed(record, stage, NODES[1:5], 200)
    assert isinstance(take(record, stage, "n07", now=1000)[1], Wait)  # n06 still runs
    record = succeed(record, stage, ["n06"], 210)
    assert isinstance(take(record, stage, "n07", now=269)[1], Wait)
    record, verdicts = run_all(record, stage, NODES[6:], now=270)
    assert granted(verdicts) == NODES[6:]


def test_the_last_wave_takes_every_node_whatever_its_size_says():
    stage = one_stage(waves=[1, 2], max_parallel="100%")
    record, _ = take(None, stage, "n01")
    record = succeed(record, stage, ["n01"], 1)
    _, verdicts = run_all(record, stage, NODES[1:], now=2)
    assert granted(verdicts) == NODES[1:]


@pytest.mark.parametrize("seed", range(20))
def test_a_whole_stage_in_random_order_never_exceeds_its_wave_or_max_parallel(seed):
    rng = random.Random(seed)
    stage = one_stage(waves=[1, "25%", "50%", "100%"], max_parallel=2, soak=5)
    sizes = stages.wave_sizes(stage, len(NODES))
    assert sizes == [1, 3, 6, 12]
    record, now, running = None, 0, []
    while not stages.is_finished(record, stage, NODES):
        now += 1
        for n in rng.sample(NODES, len(NODES)):
            record, verdict = take(record, stage, n, now=now)
            if isinstance(verdict, Granted) and n not in running:
                entered = len(record["nodes"])
                # a node enters a wave only when every earlier wave is done
                earlier = max([s for s in sizes if s < entered], default=0)
                done = [e for e in record["nodes"].values() if e["state"] == "succeeded"]
                assert len(done) >= earlier
                running.append(n)
        assert len(running) <= 2
        if running and rng.random() < 0.7:
            record = succeed(record, stage, [running.pop(rng.randrange(len(running)))], now)
        assert now < 500
    assert all(e["state"] == "succeeded" for e in record["nodes"].values())
    assert record["finished"] > 0


def test_halt_after_a_count_halts_the_stage_at_the_nth_failure():
    stage = one_stage(max_parallel="100%", halt_after=2)
    record, _ = run_all(None, stage, NODES)
    record = stages.finish(record, stage, "n01", False, "health check failed", 5, NODES)
    assert record["halted"] == ""
    record = stages.finish(record, stage, "n02", False, "unit nova-compute failed", 6, NODES)
    assert record["halted"] == ("2 of 12 nodes failed stage computes, the last n02: "
                                "unit nova-compute failed")
    for node in ("n03", "n01", "n99"):
        _, verdict = take(record, stage, node)
        assert isinstance(verdict, Halted)
        assert "stage computes (group compute) is halted: 2 of 12 nodes failed" in verdict.reason
    record = stages.finish(record, stage, "n03", False, "third", 7, NODES)
    assert "the last n02" in record["halted"]  # the first reason stays


@pytest.mark.parametrize("amount, count, failures_to_halt", [("50%", 4, 2), ("10%", 12, 2),
                                                             ("100%", 3, 3), ("1%", 12, 1)])
def test_halt_after_a_percentage_of_the_stages_nodes(amount, count, failures_to_halt):
    targets = NODES[:count]
    stage = one_stage(max_parallel="100%", halt_after=amount)
    record, _ = run_all(None, stage, targets, targets)
    for i, node in enumerate(targets[:failures_to_halt]):
        assert record["halted"] == ""
        record = stages.finish(record, stage, node, False, "bad", i, targets)
    assert record["halted"].startswith("%d of %d nodes failed" % (failures_to_halt, count))


def test_failures_below_halt_after_do_not_hold_the_stage_up():
    stage = one_stage(waves=[2, "100%"], max_parallel="100%", halt_after=3)
    targets = NODES[:4]
    record, _ = run_all(None, stage, targets, targets)
    record = stages.finish(record, stage, "n01", False, "bad", 1, targets)
    record = succeed(record, stage, ["n02"], 2, targets)
    _, verdict = take(record, stage, "n01", targets, 3)
    assert isinstance(verdict, Failed) and "bad" in verdict.reason  # not tried again
    record, verdicts = run_all(record, stage, targets[2:], targets, 3)
    assert granted(verdicts) == ["n03", "n04"]  # the next wave opened
    record = succeed(record, stage, ["n03", "n04"], 4, targets)
    assert record["finished"] == 4 and record["halted"] == ""


def test_scope_one_the_first_node_runs_it_and_the_others_wait_at_its_barrier():
    stage = policy.parse({"stages": [{"name": "migrate", "group": "controller", "scope": "one",
                                      "run": ["update", "migration"]}]}).stages[0]
    ctl = ["c1", "c2", "c3"]
    record, verdicts = run_all(None, stage, ["c2", "c1", "c3"], ctl)
    assert granted(verdicts) == ["c2"] and record["owner"] == "c2"
    assert verdicts["c1"].reason == "c2 runs stage migrate (group controller); waiting at its barrier"
    assert isinstance(take(record, stage, "c2", ctl)[1], Granted)  # the owner resumes
    record = stages.finish(record, stage, "c2", True, "migrated", 9, ctl)
    assert record["finished"] == 9
    for node in ctl:
        assert isinstance(take(record, stage, node, ctl)[1], AlreadyDone)
    assert record["nodes"].keys() == {"c2"}  # it ran exactly once


def test_scope_one_a_lost_runner_halts_the_rollout_and_is_not_run_again():
    stage = one_stage(scope="one", name="migrate")
    record, _ = take(None, stage, "n01")
    assert stages.lost(record, NODES[1:]) == ["n01"]
    record, verdict = take(record, stage, "n02", NODES[1:])
    assert isinstance(verdict, Halted)
    assert record["halted"] == "n01 died running stage migrate; not run again automatically"
    assert isinstance(take(record, stage, "n01", NODES)[1], Halted)  # back, but halted


def test_scope_one_a_failed_runner_halts_even_when_failures_are_tolerated():
    stage = one_stage(scope="one", name="migrate", halt_after=5)
    record, _ = take(None, stage, "n01")
    record = stages.finish(record, stage, "n01", False, "migration.d exited 1", 3, NODES)
    assert record["halted"] == "n01 failed stage migrate: migration.d exited 1; not run again automatically"
    assert not stages.is_finished(record, stage, NODES)


def test_lost_members_are_reported_and_count_as_failures():
    stage = one_stage(max_parallel="100%", halt_after=2)
    record, _ = run_all(None, stage, NODES[:3])
    live = [n for n in NODES if n != "n02"]
    assert stages.lost(record, live) == ["n02"]
    assert stages.lost(record, NODES) == []
    record, verdict = take(record, stage, "n04", live)
    assert isinstance(verdict, Granted)  # one lost node is below halt_after
    record = stages.finish(record, stage, "n01", False, "boom", 5, live)
    assert record["halted"] == "2 of 12 nodes failed stage computes, the last n01: boom"


def test_the_first_take_that_sees_a_stage_complete_marks_it_finished():
    stage = one_stage(max_parallel="100%")
    targets = NODES[:3]
    record, _ = run_all(None, stage, targets, targets)
    record = succeed(record, stage, targets[:2], 5, targets)
    assert record["finished"] == 0  # n03 still runs
    live = targets[:2] + ["n04"]  # n03 died: at halt_after 1 that halts, and a halted stage never finishes
    halted, verdict = take(record, stage, "n04", live, 6)
    assert isinstance(verdict, Halted) and halted["finished"] == 0
    record = succeed(record, stage, ["n03"], 7, targets)
    assert record["finished"] == 7
    again, verdict = take(dict(record, finished=0), stage, "n01", targets, 8)
    assert again["finished"] == 8 and isinstance(verdict, AlreadyDone)


def test_a_lost_node_frees_its_place_in_max_parallel_and_does_not_block_the_stage():
    stage = one_stage(max_parallel=1, halt_after=2)
    targets = NODES[:3]
    record, _ = take(None, stage, "n01", targets)
    live = targets[1:]
    record, verdict = take(record, stage, "n02", live)
    assert isinstance(verdict, Granted)
    record = succeed(record, stage, ["n02"], 1, live)
    record, _ = take(record, stage, "n03", live)
    record = succeed(record, stage, ["n03"], 2, live)
    assert record["finished"] == 2


def test_a_finished_stage_stays_finished_and_a_joiner_may_still_take_it():
    stage = one_stage(max_parallel=1, waves=[1, "100%"])
    targets = NODES[:2]
    record, _ = take(None, stage, "n01", targets)
    record = succeed(record, stage, ["n01"], 1, targets)
    record, _ = take(record, stage, "n02", targets, 2)
    record = succeed(record, stage, ["n02"], 3, targets)
    assert record["finished"] == 3
    joined = NODES[:4]
    assert stages.is_finished(record, stage, joined)
    assert not stages.complete(record, stage, joined)
    record, verdict = take(record, stage, "n03", joined, 4)
    assert isinstance(verdict, Granted)
    assert isinstance(take(record, stage, "n04", joined, 4)[1], Wait)  # max_parallel still holds
    assert stages.mark_finished(record, stage, joined, 9)["finished"] == 3


def test_resume_clears_the_halt_keeps_failures_and_turns_lost_into_failed():
    stage = one_stage(max_parallel="100%", halt_after=1)
    record, _ = run_all(None, stage, NODES[:2])
    live = NODES[1:]
    record, verdict = take(record, stage, "n03", live)
    assert isinstance(verdict, Halted)
    record = stages.resume(record, stage, live, 50)
    assert record["halted"] == "" and record["nodes"]["n01"]["state"] == "failed"
    assert isinstance(take(record, stage, "n03", live)[1], Granted)  # not halted again at once
    assert isinstance(take(record, stage, "n01", NODES)[1], Failed)


def test_resume_of_a_one_node_step_hands_it_to_one_node_again():
    stage = one_stage(scope="one", name="migrate")
    record, _ = take(None, stage, "n01")
    record = stages.finish(record, stage, "n01", False, "boom", 3, NODES)
    record = stages.resume(record, stage, NODES, 60)
    record, verdicts = run_all(record, stage, ["n02", "n01"])
    assert granted(verdicts) == ["n02"] and record["owner"] == "n02"


# next_for: the order of the stages across groups

KOLLA = policy.parse({"stages": [
    {"name": "migrate", "group": "controller", "scope": "one", "run": ["update", "migration"]},
    {"name": "conductors", "group": "conductor", "max_parallel": "100%"},
    {"name": "controllers", "group": "controller", "max_parallel": 1},
    {"name": "computes", "group": "compute", "waves": [1, "100%"], "max_parallel": 2},
]})
MEMBERS = {"controller": ["c1", "c2"], "conductor": ["d1", "d2"], "compute": ["p1", "p2", "p3"]}
GROUP = {n: g for g, ns in MEMBERS.items() for n in ns}
CONTROL = {"image_id": "img-2", "policy": KOLLA.digest, "created": 0, "halted": "",
           "halted_at": 0, "halted_by": ""}


def nxt(records, node, members=MEMBERS, control=CONTROL, pol=KOLLA):
    return stages.next_for(pol, node, GROUP.get(node, "storage"), records, members, control, 0)


def step(records, index, node, members=MEMBERS, ok=True):
    """node runs its step of stage index, as the executor would."""
    stage, targets = KOLLA.stages[index], members[KOLLA.stages[index].group]
    records[index], verdict = stages.take(records[index], stage, node, targets, 0)
    assert isinstance(verdict, Granted), verdict
    records[index] = stages.finish(records[index], stage, node, ok, "" if ok else "bad", 1, targets)


def test_next_for_walks_the_stages_in_order_across_groups():
    records = [None] * 4
    kinds = {n: nxt(records, n) for n in GROUP}
    assert {n: k.kind for n, k in kinds.items()} == {
        "c1": NextKind.RUN, "c2": NextKind.RUN, "d1": NextKind.WAIT, "d2": NextKind.WAIT,
        "p1": NextKind.WAIT, "p2": NextKind.WAIT, "p3": NextKind.WAIT}
    assert kinds["c1"].stage == 0
    assert kinds["d1"].reason == ("stage conductors (group conductor) opens when stage migrate "
                                  "(group controller) has finished: no node has started it")
    records[0], _ = stages.take(None, KOLLA.stages[0], "c1", MEMBERS["controller"], 0)
    assert nxt(records, "d1").reason.endswith("has finished: c1 started it")
    records[0] = stages.finish(records[0], KOLLA.stages[0], "c1", True, "", 1, MEMBERS["controller"])
    assert nxt(records, "c2").kind == NextKind.WAIT
    # a compute waits at the first stage before its own that is not open yet
    assert nxt(records, "p1").reason == ("stage controllers (group controller) opens when stage "
                                         "conductors (group conductor) has finished: 0 of 2 live "
                                         "nodes succeeded, 0 started, 0 failed")
    assert nxt(records, "c2").kind == NextKind.WAIT  # its next stage waits for the conductors
    assert "stage controllers (group controller) opens when stage conductors" in nxt(records, "c2").reason
    assert (nxt(records, "d1").kind, nxt(records, "d1").stage) == (NextKind.RUN, 1)
    step(records, 1, "d1")
    step(records, 1, "d2")
    assert nxt(records, "d1").kind == NextKind.DONE
    assert (nxt(records, "c2").kind, nxt(records, "c2").stage) == (NextKind.RUN, 2)
    assert nxt(records, "p1").kind == NextKind.WAIT
    step(records, 2, "c1")
    step(records, 2, "c2")
    assert nxt(records, "c1").kind == NextKind.DONE
    assert (nxt(records, "p1").kind, nxt(records, "p1").stage) == (NextKind.RUN, 3)


def test_next_for_a_group_no_stage_names_is_not_targeted():
    n = nxt([None] * 4, "s1")
    assert n.kind == NextKind.NOT_TARGETED
    assert "no stage of the rollout names group storage" in n.reason


def test_next_for_any_halted_stage_stops_every_node_of_the_rollout():
    records = [None] * 4
    step(records, 0, "c1")
    records[1], _ = stages.take(records[1], KOLLA.stages[1], "d1", MEMBERS["conductor"], 0)
    records[1] = stages.finish(records[1], KOLLA.stages[1], "d1", False, "db gone", 1,
                               MEMBERS["conductor"])
    for node in GROUP:
        n = nxt(records, node)
        assert n.kind == NextKind.HALTED and n.stage == 1
        assert "1 of 2 nodes failed stage conductors, the last d1: db gone" in n.reason


def test_next_for_a_lost_runner_halts_before_anyone_writes_it():
    records = [None] * 4
    records[0], _ = stages.take(None, KOLLA.stages[0], "c1", MEMBERS["controller"], 0)
    members = dict(MEMBERS, controller=["c2"])
    n = nxt(records, "p1", members)
    assert n.kind == NextKind.HALTED and "c1 died running stage migrate" in n.reason


def test_next_for_an_operators_halt_and_a_different_policy():
    halted = dict(CONTROL, halted="checking the canary", halted_by="operator")
    n = nxt([None] * 4, "c1", control=halted)
    assert n.kind == NextKind.HALTED
    assert "halted by operator: checking the canary" in n.reason
    other = dict(CONTROL, policy="ab" * 32)
    n = nxt([None] * 4, "c1", control=other)
    assert n.kind == NextKind.WAIT
    assert "runs policy abababababab, this node has policy %s" % KOLLA.digest[:12] in n.reason
    assert nxt([None] * 4, "c1", control=None).kind == NextKind.RUN  # no control record yet


def test_next_for_a_failed_node_stops_and_says_why():
    records = [None] * 4
    step(records, 0, "c1")
    step(records, 1, "d1")
    step(records, 1, "d2")
    pol = policy.parse(dict(KOLLA.to_dict(), stages=[
        dict(s, halt_after=2) if s["name"] == "controllers" else s
        for s in KOLLA.to_dict()["stages"]]))
    stage = pol.stages[2]
    records[2], _ = stages.take(None, stage, "c2", MEMBERS["controller"], 0)
    records[2] = stages.finish(records[2], stage, "c2", False, "unhealthy", 1, MEMBERS["controller"])
    control = dict(CONTROL, policy=pol.digest)
    n = nxt(records, "c2", control=control, pol=pol)
    assert n.kind == NextKind.FAILED and "c2 failed stage controllers: unhealthy" in n.reason
    assert nxt(records, "c1", control=control, pol=pol).kind == NextKind.RUN


def test_next_for_a_joiner_takes_a_finished_stage_without_holding_up_the_next():
    records = [None] * 4
    step(records, 0, "c1")
    step(records, 1, "d1")
    step(records, 1, "d2")
    members = dict(MEMBERS, conductor=["d1", "d2", "d3"])
    GROUP["d3"] = "conductor"
    try:
        assert (nxt(records, "d3", members).kind, nxt(records, "d3", members).stage) == (NextKind.RUN, 1)
        assert (nxt(records, "c2", members).kind, nxt(records, "c2", members).stage) == (NextKind.RUN, 2)
    finally:
        del GROUP["d3"]


def test_next_for_a_stage_someone_entered_stays_open_when_an_earlier_one_gains_a_member():
    records = [None] * 4
    step(records, 0, "c1")
    # the conductors completed, but nobody has written "finished" yet
    for node in ("d1", "d2"):
        records[1], _ = stages.take(records[1], KOLLA.stages[1], node, MEMBERS["conductor"], 0)
        records[1]["nodes"][node]["state"] = "succeeded"
    records[2], _ = stages.take(None, KOLLA.stages[2], "c1", MEMBERS["controller"], 0)
    members = dict(MEMBERS, conductor=["d1", "d2", "d3"])
    n = nxt(records, "c1", members)
    assert (n.kind, n.stage) == (NextKind.RUN, 2)
