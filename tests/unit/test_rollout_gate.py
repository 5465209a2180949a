"""The rollout gate (update/rollout.py) over real records on the file:// store, with a
clock the test turns: several nodes take, wait, finish and halt through the same
engine records; the updates themselves are recorded stand-ins."""

import contextlib
import types

import pytest

from fakes import Clock, FakeHttp, Response
from update_agent.cli import fleet as fleetcli
from update_agent.coordination import keys, rollouts
from update_agent.decide.rollout import policy as policies
from update_agent.decide.rollout.stages import NextKind
from update_agent.errors import AgentError
from update_agent.state.states import Result
from update_agent.update import blockers, rollout
from update_agent.update.agent import Outcome


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def url(tmp_path):
    return "file://%s" % (tmp_path / "engine")


def gate(url, clock, node, group, policy):
    records = rollouts.for_url(url, clock)
    records.store.clock = clock  # the file store's expiry runs on the test's clock
    g = rollout.Gate(records, policies.parse(policy), node, group, clock, member_ttl=30,
                     reboot_ttl=600)
    g.register("img-A", rollout.MemberState.IDLE)
    return g


ONE_AT_A_TIME = {"stages": [{"name": "web", "group": "web", "max_parallel": 1}]}


class Updates:
    """Stand-in for Agent._update: records each turn, answers with a scripted result."""

    def __init__(self, result=Result.SUCCESS, error="", planned=True):
        self.turns, self.result, self.error, self.planned = [], result, error, planned

    def __call__(self, turn=None):
        self.turns.append(turn)
        result = Result.NOOP if turn is None else self.result
        return Outcome("img-B", result, object() if self.planned else None, self.error,
                       0 if result in (Result.SUCCESS, Result.NOOP) else 1)


def not_yet(why):
    return Outcome("img-B", Result.WAITING if why.kind == NextKind.WAIT else Result.HALTED,
                   None, why.reason, 1)


def test_max_parallel_one_lets_one_node_in_and_the_next_after_it_finished(url, clock):
    a, b = (gate(url, clock, n, "web", ONE_AT_A_TIME) for n in ("a", "b"))
    turn = a.enter("img-B")
    assert isinstance(turn, rollout.Turn) and turn.stage.name == "web"
    waiting = b.enter("img-B")
    assert waiting.kind == NextKind.WAIT and "a" in waiting.reason
    a.finish(turn, True)
    assert isinstance(b.enter("img-B"), rollout.Turn)


def test_run_updates_in_the_turn_then_reports_the_update_not_a_noop(url, clock):
    a = gate(url, clock, "a", "web", ONE_AT_A_TIME)
    updates = Updates()
    outcome = rollout.run(a, "img-B", "img-A", updates, not_yet)
    assert outcome.result == Result.SUCCESS
    assert [t.stage.name for t in updates.turns] == ["web"]  # one turn; nothing after it
    record = a.records.stage(policies.rollout_id("img-B"), 0)
    assert record["nodes"]["a"]["state"] == "succeeded"
    assert a.records.members("web")["a"]["state"] == "idle"
    assert a.records.members("web")["a"]["image_id"] == "img-B"


def test_a_waiting_node_changes_nothing_and_says_who_holds_the_stage(url, clock):
    a, b = (gate(url, clock, n, "web", ONE_AT_A_TIME) for n in ("a", "b"))
    a.enter("img-B")
    updates = Updates()
    outcome = rollout.run(b, "img-B", "img-A", updates, not_yet)
    assert outcome.result == Result.WAITING and "max_parallel" in outcome.error
    assert updates.turns == []
    assert b.records.members("web")["b"]["state"] == "waiting"


def test_a_failed_update_halts_the_stage_and_nobody_starts_after_it(url, clock):
    a, b = (gate(url, clock, n, "web", ONE_AT_A_TIME) for n in ("a", "b"))
    failed = rollout.run(a, "img-B", "img-A", Updates(Result.ROLLED_BACK, "health check failed"),
                         not_yet)
    assert failed.result == Result.ROLLED_BACK
    assert a.records.members("web")["a"]["state"] == "failed"
    updates = Updates()
    outcome = rollout.run(b, "img-B", "img-A", updates, not_yet)
    assert outcome.result == Result.HALTED and "health check failed" in outcome.error
    assert updates.turns == []


def test_a_failed_download_keeps_the_step_and_does_not_count_as_a_failure(url, clock):
    a = gate(url, clock, "a", "web", ONE_AT_A_TIME)
    outcome = rollout.run(a, "img-B", "img-A", Updates(Result.FAILED, "download: timed out",
                                                       planned=False), not_yet)
    assert outcome.result == Result.FAILED
    record = a.records.stage(policies.rollout_id("img-B"), 0)
    assert record["nodes"]["a"]["state"] == "started" and not record["halted"]
    # the next try resumes the same step
    assert rollout.run(a, "img-B", "img-A", Updates(), not_yet).result == Result.SUCCESS


MIGRATE_THEN_REST = {"stages": [
    {"name": "migrate", "group": "db", "scope": "one", "run": ["update", "migration"]},
    {"name": "rest", "group": "db", "max_parallel": "100%"},
]}


def test_one_node_migrates_the_others_wait_at_the_barrier_then_all_update(url, clock):
    a, b = (gate(url, clock, n, "db", MIGRATE_THEN_REST) for n in ("a", "b"))
    a_updates = Updates()
    b_updates = Updates()
    first = a.enter("img-B")
    assert first.runs("migration")
    assert "barrier" in rollout.run(b, "img-B", "img-A", b_updates, not_yet).error
    a.finish(first, True)
    # a is on img-B: its step of the later stage is a no-op update, without migration
    assert rollout.run(a, "img-B", "img-B", a_updates, not_yet).ok
    assert [t.stage.name for t in a_updates.turns] == ["rest"]
    assert not a_updates.turns[0].runs("migration")
    assert rollout.run(b, "img-B", "img-A", b_updates, not_yet).result == Result.SUCCESS
    assert [t.stage.name for t in b_updates.turns] == ["rest"]
    assert not b_updates.turns[0].runs("migration")


def test_another_policy_for_the_same_image_waits_and_says_so(url, clock):
    a = gate(url, clock, "a", "web", ONE_AT_A_TIME)
    a.enter("img-B")
    other = gate(url, clock, "b", "web", {"stages": [{"group": "web", "max_parallel": 2}]})
    why = other.enter("img-B")
    assert why.kind == NextKind.WAIT and "same rollout policy" in why.reason


def test_a_group_no_stage_names_is_told_why(url, clock):
    g = gate(url, clock, "x", "cache", ONE_AT_A_TIME)
    why = g.enter("img-B")
    assert why.kind == NextKind.NOT_TARGETED and "cache" in why.reason


def test_fleet_halt_stops_starts_and_resume_goes_on(url, clock):
    a, b = (gate(url, clock, n, "web", {"stages": [{"group": "web", "max_parallel": 2}]})
            for n in ("a", "b"))
    turn = a.enter("img-B")
    rid, control = fleetcli._rollout(a.records, None)
    fleetcli._halt(a.records, rid, "bad image, looking", clock())
    halted = b.enter("img-B")
    assert halted.kind == NextKind.HALTED and "bad image, looking" in halted.reason
    view = fleetcli.status(a.records, rid, a.records.control(rid), clock())
    assert view["halted"] == "bad image, looking" and view["halted_by"] == "operator"
    assert "HALTED" in fleetcli.render(view)
    fleetcli._resume(a.records, rid, a.records.control(rid), clock())
    assert isinstance(b.enter("img-B"), rollout.Turn)
    a.finish(turn, True)


def test_fleet_status_shows_stages_members_and_failures(url, clock):
    a, b = (gate(url, clock, n, "web", ONE_AT_A_TIME) for n in ("a", "b"))
    rollout.run(a, "img-B", "img-A", Updates(Result.UNHEALTHY, "unit app.service failed"), not_yet)
    rid, control = fleetcli._rollout(a.records, "img-B")
    view = fleetcli.status(a.records, rid, control, clock())
    (stage,) = view["stages"]
    assert stage["nodes"]["a"]["state"] == "failed"
    assert "app.service" in stage["halted"]
    assert sorted(view["groups"]["web"]) == ["a", "b"]
    text = fleetcli.render(view)
    assert "app.service" in text and "group web: 2 live members" in text


WINDOWED = {"stages": [{"name": "night", "group": "web", "max_parallel": 2,
                        "windows": [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                                     "hours": "01:00-05:00"}]}]}


def _local(hour):
    import datetime
    return datetime.datetime(2026, 12, 2, hour, 30).timestamp()  # the node's local time


def test_outside_its_window_a_node_waits_and_says_which_window(url, clock):
    clock.now = _local(12)
    g = gate(url, clock, "a", "web", WINDOWED)
    why = g.enter("img-B")
    assert why.kind == NextKind.WAIT and "01:00-05:00" in why.reason and "12:30" in why.reason
    clock.now = _local(2)
    assert isinstance(g.enter("img-B"), rollout.Turn)


def test_a_blocker_holds_a_start_back_but_never_a_step_already_held(url, clock):
    g = gate(url, clock, "a", "web", BLOCKED)
    answers = ["blocker hook no-maintenance says wait (exit 1)"]
    g.blocked = lambda blocker: answers[0]
    held = g.enter("img-B")
    assert held.kind == NextKind.WAIT and "no-maintenance says wait" in held.reason
    answers[0] = ""
    assert isinstance(g.enter("img-B"), rollout.Turn)
    answers[0] = "blocker hook no-maintenance says wait (exit 1)"
    assert isinstance(g.enter("img-B"), rollout.Turn), "a step already held is not asked again"


BLOCKED = {"stages": [{"name": "web", "group": "web", "max_parallel": 2,
                       "blockers": [{"url": "http://127.0.0.1:8080/ok"}]}]}


@pytest.mark.parametrize("answer, held", [(Response(200), False), (Response(503), True),
                                          (Response(error="connection refused"), True)])
def test_a_url_blocker_lets_a_node_start_only_on_200(url, clock, answer, held):
    g = gate(url, clock, "a", "web", BLOCKED)
    http = FakeHttp({"http://127.0.0.1:8080/ok": answer})
    g.blocked = blockers.checker(types.SimpleNamespace(http=http), None)
    entered = g.enter("img-B")
    assert isinstance(entered, rollout.NotYet) == held
    if held:
        assert "http://127.0.0.1:8080/ok" in entered.reason
    assert [r.url for r in http.requests] == ["http://127.0.0.1:8080/ok"]


def test_a_step_takes_its_slot_from_the_stage_groups_budget_of_max_parallel(url, clock):
    policy = {"stages": [{"name": "half", "group": "web", "max_parallel": "50%"}]}
    gates = [gate(url, clock, n, "web", policy) for n in ("a", "b", "c", "d")]
    turn = gates[0].enter("img-B")
    assert (turn.group, turn.max_parallel) == ("web", 2)  # 50% of 4 live members


def test_a_step_taken_as_the_rollout_was_halted_is_given_back(url, clock):
    a = gate(url, clock, "a", "web", ONE_AT_A_TIME)
    rid = policies.rollout_id("img-B")
    a.control("img-B")
    # the halt lands between this node's read of the records and its take
    real_next = a.next

    def next_then_halt(image_id):
        seen = real_next(image_id)
        fleetcli._halt(a.records, rid, "halted by hand", clock())
        return seen
    a.next = next_then_halt
    why = a.enter("img-B")
    assert why.kind == NextKind.HALTED and "halted by hand" in why.reason
    assert a.records.stage(rid, 0)["nodes"] == {}, "no step started after the halt"


class Counting:
    """A store, counting the calls that reach the engine."""

    def __init__(self, store):
        self.store, self.calls = store, []

    def connected(self):
        return contextlib.nullcontext(self)

    def __getattr__(self, name):
        found = getattr(self.store, name)
        if not callable(found):
            return found

        def counted(*args, **kw):
            self.calls.append(name)
            return found(*args, **kw)
        return counted


def test_a_waiting_node_reads_the_engine_three_times_per_look_and_writes_nothing(url, clock):
    a, b = (gate(url, clock, n, "web", ONE_AT_A_TIME) for n in ("a", "b"))
    a.enter("img-B")
    b.enter("img-B")  # the control record exists from now on
    b.records.store = Counting(b.records.store)
    assert b.enter("img-B").kind == NextKind.WAIT
    # the control record, the stage records, the members (a file store has no watch to arm)
    assert sorted(b.records.store.calls) == ["children", "get", "names"]


def test_a_waiting_node_rewrites_its_member_record_only_when_it_changes_or_the_beat_is_due(url, clock):
    a = gate(url, clock, "a", "web", ONE_AT_A_TIME)
    writes = []
    register = a.records.register
    a.records.register = lambda *args: (writes.append(args[2]["state"]), register(*args))
    a.register("img-A", rollout.MemberState.WAITING)  # a new state: written
    clock.now += 5
    a.register("img-A", rollout.MemberState.WAITING)  # same, 5 s later: the record stands
    assert writes == ["waiting"]
    clock.now += 6  # 11 s since the write: past a third of the 30 s ttl
    a.register("img-A", rollout.MemberState.WAITING)
    a.register("img-A", rollout.MemberState.RUNNING)
    assert writes == ["waiting", "waiting", "running"]
    assert "a" in a.records.members("web")  # still a live member all along


def test_fleet_status_before_any_rollout_says_so_and_halt_refuses(tmp_path, url, clock):
    import io
    config = types.SimpleNamespace(coordination=types.SimpleNamespace(backend=url),
                                   source="test.conf")
    agent = types.SimpleNamespace(config=config, system=types.SimpleNamespace(clock=clock))
    out = io.StringIO()
    assert fleetcli.main(agent, ["status"], out) == 0
    assert "no rollout on the coordination engine yet" in out.getvalue()
    with pytest.raises(AgentError, match="no rollout on the coordination engine yet"):
        fleetcli.main(agent, ["halt"], io.StringIO())


def test_going_back_to_an_image_rolled_out_before_is_a_rollout_of_its_own(url, clock):
    """img-B rolled out to a and b; a went on to img-C (whose canary failed, say); the
    metadata names img-B again. a is not on img-B, and img-B's records say it is done:
    a new attempt, from empty records, runs a's step; b, already on img-B, passes it."""
    a, b = (gate(url, clock, n, "web", ONE_AT_A_TIME) for n in ("a", "b"))
    assert rollout.run(a, "img-B", "img-A", Updates(), not_yet).result == Result.SUCCESS
    assert rollout.run(b, "img-B", "img-A", Updates(), not_yet).result == Result.SUCCESS
    back = Updates()
    outcome = rollout.run(a, "img-B", "img-C", back, not_yet)
    assert outcome.result == Result.SUCCESS and [t.stage.name for t in back.turns] == ["web"]
    rid = policies.rollout_id("img-B")
    assert a.records.control(rid)["attempt"] == 2
    second = a.records.stage(keys.attempt(rid, 2), 0)
    assert second["nodes"]["a"]["state"] == "succeeded"
    assert a.records.stage(rid, 0)["nodes"]["a"]["state"] == "succeeded"  # the first is kept
    view = fleetcli.status(a.records, rid, a.records.control(rid), clock.now)
    assert view["attempt"] == 2 and list(view["stages"][0]["nodes"]) == ["a"]
    # b is on img-B: a look changes nothing for it, and starts no third attempt
    assert rollout.run(b, "img-B", "img-B", Updates(), not_yet).result in (Result.SUCCESS,
                                                                              Result.NOOP)
    assert a.records.control(rid)["attempt"] == 2
