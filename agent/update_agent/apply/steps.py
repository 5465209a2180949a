"""Steps as data, and the one runner that runs any list of them.

A path (in place, before the reboot, after it) is a list of Step; each step is a
function of the run's Context. The Runner owns all that surrounds the steps:
each is journaled before it starts and after it ends, so a killed agent resumes
where it stopped; a stop request is honoured between steps; a failure runs
error.d, leaves the root read-only again if it was, and is recorded in the
history; a step that must wait (Wait) leaves the update waiting, that step
pending. Adding a step is one line in one list.
"""

import dataclasses
import logging
import time
from typing import Callable, Optional

from update_agent.apply import health, hooks, remount
from update_agent.errors import AgentError, Interrupted
from update_agent.logs import log_fields
from update_agent.node import mounts
from update_agent.state import journal as journaling
from update_agent.state.states import Result, StepState

LOG = logging.getLogger(__name__)


class StepFailed(AgentError):
    def __init__(self, step, error):
        self.step = step
        super().__init__("step %s failed: %s" % (step, error))


class Wait(AgentError):
    """A condition to wait out, not a failure: the step runs again next time (the
    journal waits: the reboot path's slot)."""


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    run: Callable  # run(ctx)
    # runs again on resume even if journaled done: it checks the real state itself
    # (remounts), or is driven by a fresh plan (pin, sync, verify)
    rerun: bool = False
    needs_rw: bool = False  # writes the root: only between a remount-rw and a remount-ro
    # done_when(ctx): what says the step is done when that is not its own journal entry
    done_when: Optional[Callable] = None

    def done(self, ctx):
        """Done already, so skipped on resume (the one skip rule of every path)."""
        if self.rerun:
            return False
        if self.done_when is not None:
            return self.done_when(ctx)
        return ctx.journal.done(self.name)


def names(steps):
    return tuple(s.name for s in steps)


def _quiet(text):
    return None


@dataclasses.dataclass
class Context:
    """What the steps of one run work on; a step may replace plan and facts (a replan)."""

    system: object
    paths: object                   # node.paths.NodePaths
    config: object
    state: object                   # state.store.Store
    images: object                  # images.store.ImageStore
    read_mounts: Callable = mounts.read
    sleep: Callable = time.sleep
    status: Callable = _quiet       # status(text): what the agent is doing, for the daemon
    plan: object = None             # decide.plan.Plan; None after the reboot
    facts: object = None
    image_tree: str = None
    image_entries: dict = None
    env: dict = dataclasses.field(default_factory=dict)  # the hooks' environment
    journal: object = None          # state.journal.Journal
    replan: Callable = None         # in place: a fresh update.Planned once services are quiet
    slots: object = None            # reboot path: coordination slots, or None
    reboot: Callable = None         # reboot path: reboot(method, kexec load argv), or None
    migrate: bool = True            # False: a fleet rollout runs migration.d elsewhere


def run_phase(ctx, phase, **env):
    hooks.run_phase(ctx.system, ctx.paths, phase, dict(ctx.env, **env), ctx.config.agent.hook_timeout)


def phase(name, **env):
    """A step function that runs one hook phase."""
    return lambda ctx: run_phase(ctx, name, **env)


def in_order(j, order):
    """j's steps in run order (a journal read back from its file has them by name).
    Only the names it has: one an older agent's journal lacks was never its step."""
    j.steps = dict({name: j.steps[name] for name in order if name in j.steps}, **j.steps)
    return j


def journal_for(ctx, order):
    """The journal of the update ctx.plan makes, or of the one it resumes."""
    plan, facts = ctx.plan, ctx.facts
    old = ctx.state.journal.load()
    if plan.resume and old is not None:
        old.digest = plan.digest  # the same image_id may now name a rebuilt image
        return in_order(old, order)
    # previous is what the node has committed (a superseded update may have committed)
    current = ctx.state.records.load().get("current") or {}
    previous = facts.current_image_id
    previous_digest = current.get("digest", "") if current.get("image_id") == previous else ""
    return journaling.Journal(
        image_id=plan.image_id, digest=plan.digest, previous_image_id=previous,
        previous_digest=previous_digest, action=plan.action, root_was_ro=plan.root_was_ro,
        started_at=ctx.system.clock(), steps={s: StepState.PENDING for s in order},
        # the slot an unhealthy reboot took stays owed until an update succeeds
        slot_node=old.slot_node if old is not None and old.holds_slot() else "",
        migrate=ctx.migrate)


def note_failed_units(ctx, j):
    """The units failed before the update, for the health check after it: noted
    before anything changes; a resumed update keeps what its first attempt saw
    (units failed since may be the update's doing: a crash mid-update)."""
    if j.failed_units is None or not any(state == StepState.DONE for state in j.steps.values()):
        units = health.failed_units(ctx.system, ctx.paths)
        j.failed_units = sorted(units) if units is not None else None


def record(ctx, result, error):
    """The history record of the run in ctx."""
    j, plan = ctx.journal, ctx.plan
    ended = ctx.system.clock()
    rec = {"image_id": j.image_id, "previous_image_id": j.previous_image_id,
           "action": j.action, "result": result, "step": j.failed_step, "error": error,
           "started_at": j.started_at, "ended_at": ended, "restarts": j.restarted,
           "duration_s": round(ended - j.started_at, 3), "step_s": dict(j.step_s)}
    if result != Result.SUCCESS and j.mixed:
        rec["root"] = journaling.mixed_root(j)
    if plan is not None and plan.changes is not None:
        rec["changes"] = plan.to_dict()["changes"]
        rec["changes"].pop("sample", None)
        rec["change_list"] = ctx.state.history.save_change_list(j.started_at, j.image_id, plan)
    return rec


class Runner:
    """Runs a list of steps for the journal in the context; see the module's doc.

    run_phase and remount_ro are what a failure runs (error.d, read-only again);
    read_only(ctx) says whether the root is read-only now: a step that needs it
    writable fails before it starts if it is (its path lacks a remount-rw before it)."""

    def __init__(self, should_stop=None, run_phase=run_phase, remount_ro=remount.remount_ro,
                 read_only=remount.root_read_only):
        self.should_stop = should_stop or (lambda: False)
        self.run_phase = run_phase
        self.remount_ro = remount_ro
        self.read_only = read_only

    def run(self, ctx, steps, result=Result.SUCCESS):
        """Run steps; return the history record. result: what the history says once
        they all ran; "success" ends the update, another (the reboot path's
        "rebooting") leaves it running for the steps after. Raises StepFailed,
        Interrupted or Wait."""
        j = ctx.journal
        j.start()
        ctx.state.journal.save(j)
        self._run_steps(ctx, steps)
        if result == Result.SUCCESS:
            j.finish()
        ctx.state.journal.save(j)
        rec = record(ctx, result, j.note)
        ctx.state.history.append(rec)
        if result == Result.SUCCESS:
            ctx.images.retain([j.digest, j.previous_digest])
        return rec

    def _run_steps(self, ctx, steps):
        j, name = ctx.journal, None
        try:
            for step in steps:
                name = step.name
                if step.done(ctx):
                    LOG.info("step %s: already done", name)
                    continue
                if self.should_stop():
                    raise Interrupted("stopped before step %s, as asked; the next start "
                                      "resumes the update" % name)
                self._run_step(ctx, step)
        except Interrupted as e:
            self._fail(ctx, name, e, result=Result.INTERRUPTED)
            raise
        except Wait as e:
            LOG.info("step %s: %s", name, e)
            j.steps[name] = StepState.PENDING
            j.wait_for_slot()
            ctx.state.journal.save(j)
            raise
        except Exception as e:
            self._fail(ctx, name, e, result=getattr(e, "result", Result.FAILED))
            raise StepFailed(name, e)
        except BaseException as e:  # KeyboardInterrupt, SystemExit: still leave a sane node
            self._fail(ctx, name, "%s" % (type(e).__name__), result=Result.INTERRUPTED)
            raise

    def _run_step(self, ctx, step):
        j, name = ctx.journal, step.name
        if step.needs_rw and self.read_only(ctx):
            # the remounts are steps of their own, so that a resume redoes them: one missing
            # before this step is a bug in its path, not a reason to write a read-only root
            raise AgentError("the root %s is read-only, and step %s writes it: no remount-rw "
                             "step ran before it" % (ctx.paths.root, name))
        LOG.info("step %s: start", name, extra=log_fields(j.image_id, j.action, name))
        ctx.status("%s to %s: %s" % (j.action, j.image_id, name))
        ctx.state.journal.step(j, name, StepState.STARTED)
        began = ctx.system.monotonic()
        step.run(ctx)
        j.step_s[name] = round(ctx.system.monotonic() - began, 3)
        LOG.info("step %s: done in %.2f s", name, j.step_s[name],
                 extra=log_fields(j.image_id, j.action, name))
        ctx.state.journal.step(j, name, StepState.DONE)

    def _fail(self, ctx, name, error, result=Result.FAILED):
        j = ctx.journal
        LOG.error("step %s: %s: %s", name, result, error,
                  extra=log_fields(j.image_id, j.action, name, result))
        j.fail(name, error, result)
        # the node first: error.d and read-only again, even if the state dir cannot be
        # written (full, or made read-only by the kernel after I/O errors)
        nothing_ran = name == hooks.PRE_CONFIGURE and isinstance(error, hooks.HookRefused)
        if not nothing_ran:
            # undo the quiesce, as os-refresh-config does on a failing script
            try:
                self.run_phase(ctx, hooks.ERROR, UPDATE_AGENT_FAILED_STEP=str(name))
            except AgentError as e:
                LOG.error("error.d hooks failed too: %s", e)
        if j.root_was_ro:
            try:
                self.remount_ro(ctx)
            except AgentError as e:
                j.error += "; and the root is still read-write: %s" % e
                LOG.error("%s", e)
        try:
            ctx.state.journal.save(j)
            ctx.state.history.append(record(ctx, result, j.error))
        except OSError as e:
            LOG.error("cannot record the failure in %s: %s", ctx.paths.state_dir, e)
