"""The state journal: one update in progress, or the last one.

Every write is atomic. Steps are recorded before they start and after they
end, so a killed agent resumes where it stopped. The journal carries a format
version: the agent arrives with each new image, so a newer agent must be able
to read and finish what an older one journalled.
"""

import dataclasses
import logging
import os
import signal

from update_agent.errors import AgentError
from update_agent.state import statecheck, statefile
from update_agent.state.states import (FAILURES, STOPPED, UNFINISHED, Action, BadTransition,
                                       Result, Status, StepState)

LOG = logging.getLogger(__name__)

FORMAT = 1
# The step names and their order are the apply layer's (apply/inplace.py, reboot/steps.py):
# a journal keeps the names it was made with, in run order.
SLOT_STEP = "slot"  # the reboot path's step that takes the fleet's reboot slot
BOOT_CHECK_STEP = "boot-check"  # the reboot path's step that checks the kernel booted


@dataclasses.dataclass
class Journal:
    image_id: str
    digest: str
    previous_image_id: str
    previous_digest: str
    action: str
    root_was_ro: bool
    started_at: float
    steps: dict = dataclasses.field(default_factory=dict)   # name -> StepState
    step_s: dict = dataclasses.field(default_factory=dict)  # name -> seconds its last run took
    status: Status = Status.RUNNING
    failed_step: str = ""
    error: str = ""
    restarted: dict = dataclasses.field(default_factory=dict)
    kernel: str = ""              # reboot path: the kernel to boot
    old_kernel: str = ""          # reboot path: the kernel that ran before
    # reboot path: the copy of the running build (kernel.fallback_release) that the
    # boot loader falls back to, when the image rebuilds the kernel under its name
    fallback: str = ""
    kept: list = dataclasses.field(default_factory=list)  # the old kernel's files, kept
    note: str = ""
    boot_id: str = ""             # reboot path: the boot the reboot was asked from
    # the node id that holds a reboot slot: the one this reboot took, or the one an
    # unhealthy reboot this update superseded still holds (given back on success)
    slot_node: str = ""
    # reboot path: the units failed before it (None: systemd does not run this root),
    # so that the health check after the reboot counts only the units it broke
    failed_units: list = None
    # False when a fleet rollout runs the migration phase in another stage (or on
    # another node): the migration step is then skipped here
    migrate: bool = True
    format: int = FORMAT

    def __post_init__(self):
        # the saved strings (checked by statecheck.JOURNAL when loaded) as their types
        self.status = Status(self.status)
        self.steps = {name: StepState(state) for name, state in self.steps.items()}

    @property
    def unfinished(self):
        # superseded: an operator chose to start over (update-agent reboot after a failed boot)
        return self.status in UNFINISHED

    def done(self, step):
        return self.steps.get(step) == StepState.DONE

    @property
    def awaiting_boot(self):
        """The reboot was made (or recorded): the checks after it are due."""
        return (self.action == Action.REBOOT and self.unfinished and self.done("reboot")
                and not self.came_back_on_old_kernel)

    @property
    def came_back_on_old_kernel(self):
        """The reboot path's boot check failed: the node booted its old kernel again."""
        return self.action == Action.REBOOT and self.failed_step == BOOT_CHECK_STEP

    @property
    def failed_boot_check(self):
        """Stopped there, and not yet superseded by an operator."""
        return self.came_back_on_old_kernel and self.status == Status.FAILED

    def checks_due_for(self, image_id):
        """The checks after the reboot come before anything else, unless the node failed
        them (unhealthy) and the metadata now asks for another image: a fix, or the way
        back, which must not wait for a health check that image may never pass."""
        return self.awaiting_boot and (self.failed_step != "health" or self.image_id == image_id)

    def holds_slot(self):
        """A reboot slot taken and not yet released (released under slot_node); a boot
        that came back on the old kernel released it already."""
        if self.action != Action.REBOOT:
            return bool(self.slot_node)  # inherited; cleared once given back
        return bool(self.slot_node) and not self.done("release") and not self.came_back_on_old_kernel

    @property
    def mixed(self):
        """The sync began and the commit has not happened: the root holds part of
        the image over the previous one."""
        return (self.unfinished and self.steps.get("sync", StepState.PENDING) != StepState.PENDING
                and not self.done("commit"))

    # --- the moves between states, in the manner of a state machine: each one
    # refuses (BadTransition) to move from a state it does not follow ---------
    def _move(self, move, target, allowed=(Status.RUNNING,)):
        current = Status(self.status)  # a plain string assigned by older code counts too
        if current not in allowed:
            raise BadTransition("update to %s" % self.image_id, move, current, target, allowed)
        self.status = target

    def start(self):
        """Run, or run again: a new update, or one resumed after a failure, a stop, a
        wait for a slot or a crash."""
        self._move("start", Status.RUNNING, UNFINISHED)
        self.failed_step, self.error = "", ""

    def step_started(self, name):
        """The step begins: again, too, if a crash or a failure stopped it, or if it is
        one that always runs (a remount, the sync)."""
        self._move("start step %s" % name, Status.RUNNING)
        self.steps[name] = StepState.STARTED

    def step_done(self, name):
        self._move("finish step %s" % name, Status.RUNNING)
        current = StepState(self.steps.get(name, StepState.PENDING))
        if current != StepState.STARTED:
            raise BadTransition("update to %s" % self.image_id, "finish step %s" % name,
                                current, StepState.DONE, (StepState.STARTED,))
        self.steps[name] = StepState.DONE

    def fail(self, step, error, result=Result.FAILED):
        """Step `step` failed (result failed or unhealthy) or was stopped (interrupted)."""
        if result not in FAILURES:
            raise ValueError("%s is not how a step fails (%s)" % (result, ", ".join(FAILURES)))
        self._move("fail at step %s" % step, Status(result))
        self.failed_step, self.error = step or "", str(error)

    def wait_for_slot(self):
        """No fleet slot free: the slot step is taken again by the next run."""
        self._move("wait for a reboot slot", Status.WAITING)
        self.steps[SLOT_STEP] = StepState.PENDING

    def took_slot(self, node):
        """The reboot slot is held as node (given back under that id after the reboot)."""
        self._move("record the reboot slot", Status.RUNNING)
        self.slot_node = node

    def finish(self):
        self._move("finish", Status.DONE)

    def supersede(self):
        """An operator starts over after a stopped update (a reboot that came back on
        the old kernel); again, if the run that did so ended before a new journal."""
        self._move("supersede", Status.SUPERSEDED, STOPPED + (Status.SUPERSEDED,))

    def give_back_slot(self):
        """A successful update gave back the slot an unhealthy reboot held."""
        self._move("give back the reboot slot", Status.DONE, (Status.DONE,))
        self.slot_node = ""

    def stopped_at(self, order=None):
        """The first step not done, in run order: order (the step names), else the order
        of steps as the journal was made (the saved dict is sorted by name: its reader
        puts it back in run order, reboot.steps.in_run_order)."""
        for name in (self.steps if order is None else order):
            if self.steps.get(name, StepState.PENDING) != StepState.DONE:
                return name
        return ""


# Fault injection for tools/faults.py: UPDATE_AGENT_FAULT_KILL_AT=<step>:<started|done>
# makes the agent SIGKILL its whole process group (rsync and hooks included) right
# after journaling that state, exactly as a crash at that boundary would leave it.
FAULT_ENV = "UPDATE_AGENT_FAULT_KILL_AT"


def _fault_point(where):
    if os.environ.get(FAULT_ENV) == where:
        os.killpg(os.getpgrp(), signal.SIGKILL)


JOURNAL_FIX = ("the journal is never guessed at: inspect it, then repair it or move it aside "
               "as docs/state.md says (\"A damaged journal\")")


def _upgrade(data):
    """Bring an older journal format up to FORMAT (none older exists yet)."""
    fmt = data.get("format")
    if not isinstance(fmt, int):
        raise AgentError("journal has no valid format version: %r" % (fmt,))
    if fmt > FORMAT:
        raise AgentError("journal format %d is newer than this agent understands (%d); "
                         "upgrade update-agent" % (fmt, FORMAT))
    return data


class JournalFile:
    """journal.json in the agent's state dir: the update in progress, or the last one."""

    def __init__(self, state_dir):
        self.path = os.path.join(state_dir, "journal.json")

    def load(self):
        """The journal, or None. A damaged one is refused (DamagedState), never guessed
        at: it says which steps ran on the root, so only an operator may repair it."""
        data = statecheck.load(self.path, statecheck.VERSIONED, JOURNAL_FIX)
        if data is None:
            return None
        data = statecheck.check(self.path, _upgrade(data), statecheck.JOURNAL, JOURNAL_FIX)
        known = {f.name for f in dataclasses.fields(Journal)}
        return Journal(**{k: v for k, v in data.items() if k in known})

    def save(self, journal):
        statefile.write_json(self.path, dataclasses.asdict(journal))

    def step(self, journal, name, state):
        """Journal that step `name` started or is done, then save it."""
        moves = {StepState.STARTED: journal.step_started, StepState.DONE: journal.step_done}
        state = StepState(state)
        if state not in moves:
            raise ValueError("step %s: a step is journaled started or done, not %s" % (name, state))
        moves[state](name)
        self.save(journal)
        _fault_point("%s:%s" % (name, state))


def mixed_root(j):
    """What the root holds when an update stopped between its sync and its commit
    (journal j), else ""."""
    if not j.mixed:
        return ""
    over = "mixed: holds part of image %s over %s" % (j.image_id, j.previous_image_id or "(none)")
    if j.failed_step:
        return "%s; step %s failed: %s" % (over, j.failed_step, j.error or "?")
    return "%s; stopped at step %s" % (over, j.stopped_at())  # killed: nothing recorded why
