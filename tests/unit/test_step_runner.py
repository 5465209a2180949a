"""The one step runner and the step lists: what an operator relies on when an update
is stopped, killed, fails or waits, whatever the path."""

import copy
import dataclasses
import os
import types

import pytest

import state_fixtures
from fakes import FakeSystem
from update_agent.apply import hooks, inplace, remount, steps
from update_agent.errors import AgentError, Interrupted
from update_agent.reboot import steps as rebooting
from update_agent.state import journal
from update_agent.state.journal import JournalFile


class FakeJournalFile:
    """journal.json, in memory: every save and step boundary, in order."""

    def __init__(self, old=None):
        self.old = old
        self.events = []        # (step, started|done)
        self.saves = []         # the journal as saved, each time

    def load(self):
        return self.old

    def save(self, j):
        self.saves.append(copy.deepcopy(dataclasses.asdict(j)))

    def step(self, j, name, state):
        j.steps[name] = state
        self.events.append((name, state))
        self.save(j)


class FakeState:
    """The state dir, in memory (state.store.Store's parts that the runner uses)."""

    def __init__(self, old=None):
        self.journal = FakeJournalFile(old)
        self.records = types.SimpleNamespace(load=lambda: {})
        self.history = []       # the records appended, in order

    @property
    def events(self):
        return self.journal.events

    @property
    def saves(self):
        return self.journal.saves


class Node:
    """What a failure does to the node: the hook phases run, the root remounted."""

    def __init__(self, read_only=False):
        self.phases = []
        self.remounted_ro = 0
        self.ro = read_only     # the root's mount, as the runner reads it

    def run_phase(self, ctx, phase, **env):
        self.phases.append((phase, env))

    def remount_ro(self, ctx):
        self.remounted_ro += 1

    def remount_rw(self, ctx):
        self.ro = False

    def read_only(self, ctx):
        return self.ro


def _journal(names, root_was_ro=True, **steps_done):
    return journal.Journal(image_id="img-2", digest="sha256:2", previous_image_id="img-1",
                           previous_digest="sha256:1", action="in-place", root_was_ro=root_was_ro,
                           started_at=990.0,
                           steps=dict({n: "pending" for n in names}, **steps_done))


def _context(j, state=None):
    paths = types.SimpleNamespace(root="/nowhere", state_dir="/nowhere/state")
    return steps.Context(system=FakeSystem(tick=0.5), paths=paths,
                         config=types.SimpleNamespace(
                             agent=types.SimpleNamespace(hook_timeout=1, remount_retries=1)),
                         state=state or FakeState(),
                         images=types.SimpleNamespace(retain=lambda digests: None),
                         journal=j)


def _runner(node, should_stop=None):
    return steps.Runner(should_stop, run_phase=node.run_phase, remount_ro=node.remount_ro,
                        read_only=node.read_only)


def _recording(ran, name, **kw):
    return steps.Step(name, lambda ctx: ran.append(name), **kw)


def _fails(error):
    def run(ctx):
        raise error
    return run


def test_each_step_is_journaled_started_then_done_in_list_order_and_the_update_recorded():
    ran = []
    path = [_recording(ran, "a"), _recording(ran, "b"), _recording(ran, "c")]
    j = _journal(steps.names(path))
    ctx = _context(j)
    record = _runner(Node()).run(ctx, path)
    assert ran == ["a", "b", "c"]
    assert ctx.state.events == [("a", "started"), ("a", "done"), ("b", "started"), ("b", "done"),
                                ("c", "started"), ("c", "done")]
    # the journal says running before the first step, done after the last
    assert ctx.state.saves[0]["status"] == "running" and ctx.state.saves[-1]["status"] == "done"
    assert record["result"] == "success" and record["step"] == ""
    assert set(record["step_s"]) == {"a", "b", "c"}
    assert ctx.state.history == [record]


def test_a_path_that_does_not_end_the_update_leaves_it_running():
    j = _journal(["a"])
    ctx = _context(j)
    record = _runner(Node()).run(ctx, [steps.Step("a", lambda ctx: None)], result="rebooting")
    assert record["result"] == "rebooting" and j.status == "running"


def test_on_resume_done_steps_are_skipped_and_rerun_steps_run_again():
    ran = []
    path = [_recording(ran, "quiesce", done_when=lambda ctx: ctx.journal.done("copy")),
            _recording(ran, "remount", rerun=True), _recording(ran, "copy"),
            _recording(ran, "commit")]
    j = _journal(steps.names(path), quiesce="done", remount="done", copy="done")
    _runner(Node()).run(_context(j), path)
    assert ran == ["remount", "commit"]


def _due(path, ctx):
    return [s.name for s in path if not s.done(ctx)]


def test_a_resumed_in_place_update_runs_its_remounts_pin_sync_and_verify_again():
    done = {n: "done" for n in ("pre-configure", "remount-rw", "pin", "sync", "verify")}
    ctx = _context(_journal(inplace.STEPS, **done))
    ctx.plan = types.SimpleNamespace(changes=types.SimpleNamespace(empty=True), accounts=[])
    # the sync is done and nothing is left to copy: no need to quiesce again
    assert _due(inplace.IN_PLACE, ctx)[:5] == ["remount-rw", "pin", "sync", "verify", "commit"]
    # the fresh plan still has work: services must be quiet for it
    ctx.plan.changes.empty = False
    assert _due(inplace.IN_PLACE, ctx)[:2] == ["pre-configure", "remount-rw"]


def test_a_reboot_path_sync_whose_verify_is_not_done_runs_again():
    before = steps.names(rebooting.BEFORE_REBOOT)
    done = {n: "done" for n in before[:before.index("sync") + 1]}
    ctx = _context(_journal(rebooting.STEPS, **done))
    assert _due(rebooting.BEFORE_REBOOT, ctx)[:4] == ["remount-rw", "pin", "sync", "verify"]
    ctx.journal.steps["verify"] = "done"
    assert _due(rebooting.BEFORE_REBOOT, ctx)[:2] == ["remount-rw", "pin"]
    assert "sync" not in _due(rebooting.BEFORE_REBOOT, ctx)


def test_a_stop_request_is_honoured_between_steps_and_the_next_start_resumes():
    ran = []
    path = [_recording(ran, "a"), _recording(ran, "b")]
    j = _journal(steps.names(path))
    ctx, node = _context(j), Node()
    with pytest.raises(Interrupted):
        _runner(node, should_stop=lambda: bool(ran)).run(ctx, path)
    assert ran == ["a"] and j.steps == {"a": "done", "b": "pending"}
    assert (j.status, j.failed_step) == ("interrupted", "b")
    assert j.stopped_at() == "b"
    assert node.remounted_ro == 1 and [p for p, _ in node.phases] == [hooks.ERROR]
    assert ctx.state.history[-1]["result"] == "interrupted"


def test_a_failure_runs_error_d_leaves_the_root_read_only_and_records_the_step():
    ran = []
    path = [_recording(ran, "a"), steps.Step("b", _fails(AgentError("disk full"))),
            _recording(ran, "c")]
    j = _journal(steps.names(path))
    ctx, node = _context(j), Node()
    with pytest.raises(steps.StepFailed) as e:
        _runner(node).run(ctx, path)
    assert e.value.step == "b" and "disk full" in str(e.value)
    assert ran == ["a"] and j.steps["b"] == "started" and j.steps["c"] == "pending"
    assert node.phases == [(hooks.ERROR, {"UPDATE_AGENT_FAILED_STEP": "b"})]
    assert node.remounted_ro == 1
    assert (j.status, j.failed_step, j.error) == ("failed", "b", "disk full")
    assert ctx.state.saves[-1]["failed_step"] == "b"
    record = ctx.state.history[-1]
    assert (record["result"], record["step"], record["error"]) == ("failed", "b", "disk full")


def test_a_failure_with_its_own_result_is_recorded_so():
    j = _journal(["health"])
    ctx = _context(j)
    with pytest.raises(steps.StepFailed):
        _runner(Node()).run(ctx, [steps.Step("health", _fails(rebooting.Unhealthy("sick")))])
    assert j.status == "unhealthy" and ctx.state.history[-1]["result"] == "unhealthy"


def test_a_root_found_writable_is_not_made_read_only_by_a_failure():
    j = _journal(["a"], root_was_ro=False)
    node = Node()
    with pytest.raises(steps.StepFailed):
        _runner(node).run(_context(j), [steps.Step("a", _fails(AgentError("no")))])
    assert node.remounted_ro == 0 and [p for p, _ in node.phases] == [hooks.ERROR]


def test_refused_pre_configure_hooks_ran_nothing_to_undo():
    j = _journal(["pre-configure"])
    node = Node()
    refused = steps.Step("pre-configure", _fails(hooks.HookRefused("writable by others")))
    with pytest.raises(steps.StepFailed):
        _runner(node).run(_context(j), [refused])
    assert node.phases == [] and node.remounted_ro == 1


def test_a_remount_that_fails_after_a_failure_is_said_in_the_error():
    j = _journal(["a"])
    node = Node()

    def still_busy(ctx):
        raise AgentError("busy")
    runner = steps.Runner(run_phase=node.run_phase, remount_ro=still_busy)
    with pytest.raises(steps.StepFailed):
        runner.run(_context(j), [steps.Step("a", _fails(AgentError("no")))])
    assert j.error == "no; and the root is still read-write: busy"


def test_waiting_for_a_slot_leaves_the_update_waiting_and_the_slot_step_pending():
    ran = []
    slots = types.SimpleNamespace(take=lambda: (False, "2 of 2 held"), node="n1")
    path = [steps.Step("slot", rebooting.take_slot), _recording(ran, "sync")]
    j = _journal(steps.names(path))
    ctx, node = _context(j), Node()
    ctx.slots = slots
    with pytest.raises(rebooting.WaitingForSlot):
        _runner(node).run(ctx, path)
    assert ran == [] and j.status == "waiting" and j.steps["slot"] == "pending"
    assert ctx.state.saves[-1]["steps"]["slot"] == "pending"
    # not a failure: nothing to undo, nothing in the history
    assert node.phases == [] and node.remounted_ro == 0 and ctx.state.history == []
    assert j.failed_step == ""


def test_adding_a_step_is_one_line_in_one_list():
    ran = []
    path = [_recording(ran, "a"), _recording(ran, "b")]
    path.insert(1, _recording(ran, "audit"))  # the one line
    plan = types.SimpleNamespace(resume=False, image_id="img-2", digest="sha256:2",
                                 action="in-place", root_was_ro=True, changes=None)
    ctx = _context(None)
    ctx.plan, ctx.facts = plan, types.SimpleNamespace(current_image_id="img-1")
    ctx.journal = steps.journal_for(ctx, steps.names(path))
    assert ctx.journal.stopped_at() == "a" and list(ctx.journal.steps) == ["a", "audit", "b"]
    _runner(Node()).run(ctx, path)
    assert ran == ["a", "audit", "b"]
    assert ("audit", "started") in ctx.state.events and "audit" in ctx.state.history[-1]["step_s"]


@pytest.mark.parametrize("path", [inplace.IN_PLACE, rebooting.BEFORE_REBOOT, rebooting.AFTER_REBOOT],
                         ids=["in-place", "before-reboot", "after-reboot"])
def test_a_step_that_writes_the_root_runs_only_while_it_is_writable(path):
    writable = False
    for step in path:
        if step.run is remount.remount_rw:
            writable = True
        elif step.run is remount.remount_ro_if_it_was:
            writable = False
        assert writable or not step.needs_rw, "%s runs on a read-only root" % step.name


def test_a_step_that_writes_the_root_is_refused_on_a_read_only_root_before_it_starts():
    ran = []
    path = [_recording(ran, "a"), _recording(ran, "write", needs_rw=True)]
    j = _journal(steps.names(path))
    ctx, node = _context(j), Node(read_only=True)
    with pytest.raises(steps.StepFailed) as e:
        _runner(node).run(ctx, path)
    assert ran == ["a"] and e.value.step == "write"
    assert "read-only" in str(e.value) and "remount-rw" in str(e.value)
    assert j.steps["write"] == "pending" and (j.status, j.failed_step) == ("failed", "write")
    assert ctx.state.history[-1]["result"] == "failed"


def test_a_step_that_writes_the_root_runs_once_a_remount_made_it_writable():
    ran = []
    node = Node(read_only=True)
    path = [steps.Step("remount-rw", node.remount_rw, rerun=True),
            _recording(ran, "write", needs_rw=True)]
    j = _journal(steps.names(path))
    _runner(node).run(_context(j), path)
    assert ran == ["write"] and j.status == "done"


def test_the_journal_names_are_the_lists_names_in_run_order():
    assert inplace.STEPS == tuple(s.name for s in inplace.IN_PLACE)
    assert rebooting.STEPS == steps.names(rebooting.BEFORE_REBOOT + rebooting.AFTER_REBOOT)
    assert len(set(rebooting.STEPS)) == len(rebooting.STEPS)


STORED = state_fixtures.stored()


@pytest.mark.parametrize("version, name", STORED, ids=["%s/%s" % s for s in STORED])
def test_an_earlier_releases_journal_says_where_it_stopped_as_that_release_did(version, name):
    # its steps dict, saved sorted by name, read back in run order
    case = state_fixtures.load(version, name)
    j = JournalFile(os.path.join(state_fixtures.DATA, version, name, "state")).load()
    said = (case["status"].get("unfinished_update") or {}).get("step")
    assert set(j.steps) <= set(rebooting.step_names(j.action))
    if said:
        assert rebooting.in_run_order(j).stopped_at() == said
        assert journal.mixed_root(j) == case["status"]["unfinished_update"]["mixed"]


@pytest.mark.parametrize("path", [inplace.IN_PLACE, rebooting.AFTER_REBOOT], ids=["in-place", "after"])
def test_migration_is_skipped_where_a_fleet_rollout_runs_it_in_another_stage(path):
    ctx = _context(_journal(steps.names(path)))
    ctx.plan = types.SimpleNamespace(changes=types.SimpleNamespace(empty=False), accounts=[])
    assert "migration" in _due(path, ctx)
    ctx.journal.migrate = False
    assert "migration" not in _due(path, ctx)
    assert "configure" in _due(path, ctx)  # only the migration phase is elsewhere
