"""The journal's moves between states: each one from every status, and every step
state. An allowed move lands where the agent relies on it landing; any other one
is refused with a BadTransition naming both states, the journal left as it was."""

import dataclasses
import itertools
import json
import os
import shutil

import pytest

import state_fixtures
from update_agent.errors import AgentError
from update_agent.state import journal
from update_agent.state.store import Store
from update_agent.state.states import Action, BadTransition, Result, Status, StepState


def _journal(status, steps=None, **kw):
    return journal.Journal(image_id="img-B", digest="", previous_image_id="img-A",
                           previous_digest="", action="reboot", root_was_ro=True, started_at=0.0,
                           steps=dict(steps or {"sync": "started", "slot": "done"}),
                           status=status, **kw)


# move -> (how to make it, {status it is allowed from: status it lands in}); every
# status not listed must refuse it
UNFINISHED = (Status.RUNNING, Status.WAITING, Status.FAILED, Status.INTERRUPTED, Status.UNHEALTHY)
RUNNING = {Status.RUNNING: Status.RUNNING}
MOVES = {
    # a new update, or one resumed after a failure, a stop, a slot wait or a crash
    "start": (lambda j: j.start(), {s: Status.RUNNING for s in UNFINISHED}),
    "step_started": (lambda j: j.step_started("sync"), RUNNING),
    "step_done": (lambda j: j.step_done("sync"), RUNNING),
    "fail failed": (lambda j: j.fail("sync", "rsync: ENOSPC"), {Status.RUNNING: Status.FAILED}),
    "fail interrupted": (lambda j: j.fail("sync", "stopped", Result.INTERRUPTED),
                         {Status.RUNNING: Status.INTERRUPTED}),
    "fail unhealthy": (lambda j: j.fail("health", "sshd failed", Result.UNHEALTHY),
                       {Status.RUNNING: Status.UNHEALTHY}),
    "wait_for_slot": (lambda j: j.wait_for_slot(), {Status.RUNNING: Status.WAITING}),
    "took_slot": (lambda j: j.took_slot("node-1"), RUNNING),
    "finish": (lambda j: j.finish(), {Status.RUNNING: Status.DONE}),
    # `update-agent reboot` after a boot that came back on the old kernel; again if
    # the run that superseded it ended before it wrote a journal of its own
    "supersede": (lambda j: j.supersede(),
                  {s: Status.SUPERSEDED for s in (Status.FAILED, Status.INTERRUPTED,
                                                  Status.UNHEALTHY, Status.SUPERSEDED)}),
    # an in-place update that succeeded gives back an unhealthy reboot's slot
    "give_back_slot": (lambda j: j.give_back_slot(), {Status.DONE: Status.DONE}),
}
PAIRS = list(itertools.product(Status, MOVES))


@pytest.mark.parametrize("status, move", PAIRS, ids=["%s-%s" % p for p in PAIRS])
def test_every_move_from_every_status(status, move):
    make, allowed = MOVES[move]
    j = _journal(status)
    before = dataclasses.asdict(j)
    if status in allowed:
        make(j)
        assert j.status is allowed[status]
        return
    with pytest.raises(BadTransition) as e:
        make(j)
    assert isinstance(e.value, AgentError)  # the CLI reports it as one line, exit 1
    message = str(e.value)
    assert message.startswith("update to img-B: cannot ")
    assert "from %s to " % status in message, message
    assert dataclasses.asdict(j) == before  # nothing half-moved


STEP_MOVES = {"step_started": {s: StepState.STARTED for s in StepState},
              # a step is done only once it started: never from pending, never twice
              "step_done": {StepState.STARTED: StepState.DONE}}
STEP_PAIRS = list(itertools.product(StepState, STEP_MOVES))


@pytest.mark.parametrize("state, move", STEP_PAIRS, ids=["%s-%s" % p for p in STEP_PAIRS])
def test_every_step_move_from_every_step_state(state, move):
    j = _journal(Status.RUNNING, steps={"sync": state})
    allowed = STEP_MOVES[move]
    if state in allowed:
        getattr(j, move)("sync")
        assert j.steps["sync"] is allowed[state] and j.status is Status.RUNNING
        return
    with pytest.raises(BadTransition, match="cannot finish step sync from %s to done" % state):
        getattr(j, move)("sync")
    assert j.steps["sync"] == state


def test_a_step_never_journaled_starts_from_pending():
    # a resumed journal of the other path lacks some of this path's step names
    j = _journal(Status.RUNNING, steps={})
    with pytest.raises(BadTransition, match="from pending"):
        j.step_done("restart")
    j.step_started("restart")
    j.step_done("restart")
    assert j.done("restart")


def test_start_forgets_the_last_failure():
    j = _journal(Status.RUNNING)
    j.fail("sync", OSError("No space left on device"))
    assert (j.status, j.failed_step, j.error) == ("failed", "sync", "No space left on device")
    j.start()
    assert (j.status, j.failed_step, j.error) == ("running", "", "")


def test_a_step_fails_only_with_a_failure_result():
    j = _journal(Status.RUNNING)
    for result in set(Result) - {Result.FAILED, Result.INTERRUPTED, Result.UNHEALTHY}:
        with pytest.raises(ValueError, match=str(result)):
            j.fail("sync", "x", result)
    assert j.status is Status.RUNNING and j.failed_step == ""


def test_waiting_for_a_slot_leaves_the_slot_step_to_take_again():
    j = _journal(Status.RUNNING, steps={"slot": "started"})
    j.wait_for_slot()
    assert j.steps["slot"] is StepState.PENDING and j.unfinished


def test_the_slot_is_recorded_then_given_back():
    j = _journal(Status.RUNNING)
    j.took_slot("node-1")
    assert j.slot_node == "node-1"
    j.finish()
    j.give_back_slot()
    assert j.slot_node == "" and j.status is Status.DONE


def test_a_status_assigned_as_a_plain_string_still_moves():
    # apply/ and reboot/ still assign the saved strings
    j = _journal(Status.RUNNING)
    j.status = "interrupted"
    j.start()
    assert j.status is Status.RUNNING
    j.status = "done"
    with pytest.raises(BadTransition, match="from done to running"):
        j.start()


def test_strings_become_their_types_and_compare_equal_to_the_strings():
    j = _journal("unhealthy", steps={"sync": "done"})
    assert j.status is Status.UNHEALTHY and j.steps["sync"] is StepState.DONE
    assert j.status == "unhealthy" and j.done("sync") and "%s" % j.status == "unhealthy"


def test_store_step_journals_through_the_moves(tmp_path):
    store = Store(str(tmp_path))
    j = _journal(Status.RUNNING, steps={"sync": "pending"})
    store.journal.step(j, "sync", "started")
    assert store.journal.load().steps["sync"] is StepState.STARTED
    store.journal.step(j, "sync", StepState.DONE)
    assert store.journal.load().steps["sync"] is StepState.DONE
    with pytest.raises(BadTransition):
        store.journal.step(j, "sync", "done")  # done twice
    assert store.journal.load().steps["sync"] == "done"


def test_the_saved_journal_holds_the_same_strings(tmp_path):
    store = Store(str(tmp_path))
    j = _journal(Status.RUNNING, steps={"slot": "pending"})
    j.step_started("slot")
    j.wait_for_slot()
    store.journal.save(j)
    text = (tmp_path / "journal.json").read_text()
    assert '"status": "waiting"' in text and '"slot": "pending"' in text
    loaded = store.journal.load()
    assert loaded == j and loaded.status is Status.WAITING


@pytest.mark.parametrize("version, name", state_fixtures.stored(),
                         ids=["%s/%s" % s for s in state_fixtures.stored()])
def test_a_stored_journal_of_an_earlier_release_loads_and_saves_its_values(tmp_path, version, name):
    src = os.path.join(state_fixtures.DATA, version, name, "state", "journal.json")
    shutil.copy(src, tmp_path / "journal.json")
    store = Store(str(tmp_path))
    j = store.journal.load()
    assert isinstance(j.status, Status) and all(isinstance(s, StepState) for s in j.steps.values())
    store.journal.save(j)
    with open(src) as f:
        old = json.load(f)
    saved = json.loads((tmp_path / "journal.json").read_text())
    # fields added since (fallback) get their defaults; every stored value is kept as it was
    assert {k: saved[k] for k in old} == old


def test_the_results_are_those_reported_and_counted():
    # the metrics keep one gauge per result, in this order
    assert [r.value for r in Result] == [
        "success", "noop", "failed", "refused", "reboot-required", "rebooting", "waiting",
        "interrupted", "rolled-back", "unhealthy", "halted"]


def test_the_actions_are_the_strings_journals_and_histories_hold():
    assert [a.value for a in Action] == ["noop", "in-place", "rollback", "reboot", "refuse"]


@pytest.mark.parametrize("action, status, failed_step, came_back, blocks", [
    ("reboot", "failed", "boot-check", True, True),        # back on the old kernel: refused again
    ("reboot", "superseded", "boot-check", True, False),   # an operator asked to start over
    ("reboot", "failed", "health", False, False),
    ("in-place", "failed", "boot-check", False, False),    # only the reboot path checks the boot
])
def test_a_failed_boot_check_is_told_from_the_journal(action, status, failed_step, came_back,
                                                       blocks):
    j = journal.Journal(image_id="img-B", digest="", previous_image_id="img-A",
                        previous_digest="", action=action, root_was_ro=True, started_at=0.0,
                        status=status, failed_step=failed_step)
    assert (j.came_back_on_old_kernel, j.failed_boot_check) == (came_back, blocks)
