"""The state journal (one update in progress), the image state and the history.

Every write is atomic. Steps are recorded before they start and after they
end, so a killed agent resumes where it stopped. The journal carries a format
version: the agent arrives with each new image, so a newer agent must be able
to read and finish what an older one journalled.
"""

import dataclasses
import json
import logging
import os
import signal

from update_agent.errors import AgentError
from update_agent.state import statecheck, statefile
from update_agent.state.statecheck import DamagedState
from update_agent.state.states import (FAILURES, STOPPED, UNFINISHED, Action, BadTransition,
                                       Result, Status, StepState)

LOG = logging.getLogger(__name__)

FORMAT = 1
STATE_FILE = "images.json"
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


# what to do about a damaged state file, the end of its one line
JOURNAL_FIX = ("the journal is never guessed at: inspect it, then repair it or move it aside "
               "as docs/state.md says (\"A damaged journal\")")
STATE_FIX = ("move it aside: the next commit writes it again, but until then no previous "
             "image is known to roll back to")
REJECTED_FIX = ("it lists the images not applied again: repair it by hand, or move it aside "
                "to forget those rejections")
DEPLOYMENTS_FIX = ("it lists the Heat deployments done: repair it by hand, or move it aside "
                   "and the deployments in the metadata are applied and signalled again")
HOLD_FIX = "treated as held: `update-agent unhold` removes it"
STATUS_FIX = "ignored: the next run writes it again"
CHANGES_FIX = "ignored: this update's change list is not shown"


def _upgrade(data):
    """Bring an older journal format up to FORMAT (none older exists yet)."""
    fmt = data.get("format")
    if not isinstance(fmt, int):
        raise AgentError("journal has no valid format version: %r" % (fmt,))
    if fmt > FORMAT:
        raise AgentError("journal format %d is newer than this agent understands (%d); "
                         "upgrade update-agent" % (fmt, FORMAT))
    return data


class Store:
    """Journal, image state and history under the agent's state dir."""

    def __init__(self, state_dir):
        self.state_dir = state_dir
        self.journal_path = os.path.join(state_dir, "journal.json")
        self.state_path = os.path.join(state_dir, STATE_FILE)
        self.history_path = os.path.join(state_dir, "history.jsonl")

    def _write_json(self, path, data):
        os.makedirs(self.state_dir, exist_ok=True)
        statefile.write_atomic(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode(),
                               mode=0o600)

    def load_journal(self):
        """The journal, or None. A damaged one is refused (DamagedState), never guessed
        at: it says which steps ran on the root, so only an operator may repair it."""
        data = statecheck.load(self.journal_path, statecheck.VERSIONED, JOURNAL_FIX)
        if data is None:
            return None
        data = statecheck.check(self.journal_path, _upgrade(data), statecheck.JOURNAL, JOURNAL_FIX)
        known = {f.name for f in dataclasses.fields(Journal)}
        return Journal(**{k: v for k, v in data.items() if k in known})

    def save_journal(self, journal):
        self._write_json(self.journal_path, dataclasses.asdict(journal))

    def step(self, journal, name, state):
        """Journal that step `name` started or is done, then save it."""
        moves = {StepState.STARTED: journal.step_started, StepState.DONE: journal.step_done}
        state = StepState(state)
        if state not in moves:
            raise ValueError("step %s: a step is journaled started or done, not %s" % (name, state))
        moves[state](name)
        self.save_journal(journal)
        _fault_point("%s:%s" % (name, state))

    def load_state(self):
        """{'current': {'image_id', 'digest'}, 'previous': {...}} as committed.

        A damaged file is refused, not rebuilt from /etc/image_id: that gives the
        current image's id but not the previous one, and an update that went on
        would lose, unsaid, the rollback a failed health check relies on."""
        return statecheck.load(self.state_path, statecheck.IMAGE_STATE, STATE_FIX, missing={})

    def commit_state(self, image_id, digest, previous_image_id="", previous_digest=""):
        state = self.load_state()
        current = state.get("current") or {}
        if current.get("image_id") not in (None, image_id):
            state["previous"] = current
        elif previous_image_id and previous_image_id != image_id:
            state["previous"] = {"image_id": previous_image_id, "digest": previous_digest}
        state["current"] = {"image_id": image_id, "digest": digest}
        self._write_json(self.state_path, state)

    def save_change_list(self, started_at, image_id, plan, keep=20):
        """Keep the full change list of an update beside the history (the last `keep`)."""
        directory = os.path.join(self.state_dir, "changes")
        os.makedirs(directory, exist_ok=True)
        name = "%d-%s.json" % (int(started_at), image_id)
        ch = plan.changes
        data = {"image_id": image_id, "changed": ["/" + p for p in ch.changed] +
                ["/" + rel for rel, _ in plan.accounts],
                "added": ["/" + p for p in ch.added], "deleted": ["/" + p for p in ch.deleted]}
        statefile.write_atomic(os.path.join(directory, name),
                               json.dumps(data, indent=0).encode("utf-8", "surrogateescape"),
                               mode=0o600)
        for old in sorted(os.listdir(directory))[:-keep]:
            os.unlink(os.path.join(directory, old))
        return name

    def load_change_list(self, name):
        if not name or "/" in name:
            return None
        return self._cache(os.path.join("changes", name), statecheck.CHANGE_LIST, CHANGES_FIX, None)

    def append_history(self, record):
        os.makedirs(self.state_dir, exist_ok=True)
        line = json.dumps(record, sort_keys=True) + "\n"
        fd = os.open(self.history_path,
                     os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = "\n" + line  # a crash tore the last line: do not glue this one to it
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    # --- small state files: hold, Heat deployments done, the daemon's status ---
    def _path(self, name):
        return os.path.join(self.state_dir, name)

    def _decision(self, name, field, fix, missing):
        """A file that records an operator's or the agent's decision: refused when damaged."""
        return statecheck.load(self._path(name), field, fix, missing)

    def _cache(self, name, field, fix, missing):
        """A file the agent can do without: ignored, with one warning, when damaged."""
        try:
            return statecheck.load(self._path(name), field, fix, missing)
        except DamagedState as e:
            LOG.warning("%s", e)
            return missing

    def hold(self):
        """{'reason', 'since'} when automatic updates are held, else None. A damaged
        hold.json holds: someone meant to stop the updates."""
        try:
            return self._decision("hold.json", statecheck.HOLD, HOLD_FIX, None)
        except DamagedState as e:
            LOG.warning("%s", e)
            why = "%s: %s" % (e.field, e.wrong) if e.field else e.wrong
            return {"reason": "hold.json is damaged (%s); %s" % (why, HOLD_FIX), "since": None}

    def set_hold(self, reason, since):
        self._write_json(self._path("hold.json"), {"reason": reason, "since": since})

    def clear_hold(self):
        try:
            os.unlink(self._path("hold.json"))
            return True
        except FileNotFoundError:
            return False

    def deployments_done(self):
        return self._decision("deployments.json", statecheck.DEPLOYMENTS, DEPLOYMENTS_FIX, {})

    def mark_deployment_done(self, key, record):
        done = self.deployments_done()
        done[key] = record
        self._write_json(self._path("deployments.json"), done)

    def rejected(self):
        """{image_id: {"digest", "why", "at"}}: images rolled back from; not applied again.
        A damaged file is refused: read as empty, it would re-apply a rolled-back image."""
        return self._decision("rejected.json", statecheck.REJECTED, REJECTED_FIX, {})

    def reject(self, image_id, digest, why, at):
        data = self.rejected()
        data[image_id] = {"digest": digest, "why": why, "at": at}
        self._write_json(self._path("rejected.json"), data)

    def unreject(self, image_id):
        data = self.rejected()
        if data.pop(image_id, None) is not None:
            self._write_json(self._path("rejected.json"), data)

    def save_status(self, status):
        self._write_json(self._path("status.json"), status)

    def load_status(self):
        return self._cache("status.json", statecheck.STATUS, STATUS_FIX, {})

    def history(self, limit=10):
        """The last `limit` readable records, oldest first. A torn last line is what a
        crash leaves: skipped. Other unreadable lines are skipped with one warning."""
        try:
            with open(self.history_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        except OSError as e:
            LOG.warning("%s: cannot be read (%s); no history shown", self.history_path, e.strerror)
            return []
        records, bad = statecheck.history_records(data, limit)
        if bad:
            number, wrong = bad[0]  # the latest
            LOG.warning("%s: line %d: %s; skipped (unreadable lines: %d)", self.history_path,
                        number, wrong, len(bad))
        return records


def mixed_root(j):
    """What the root holds when an update stopped between its sync and its commit
    (journal j), else ""."""
    if not j.mixed:
        return ""
    over = "mixed: holds part of image %s over %s" % (j.image_id, j.previous_image_id or "(none)")
    if j.failed_step:
        return "%s; step %s failed: %s" % (over, j.failed_step, j.error or "?")
    return "%s; stopped at step %s" % (over, j.stopped_at())  # killed: nothing recorded why
