"""One update, as data flowing through the agent:

metadata -> Desired -> staged image -> manifests + facts -> Plan -> apply -> record.

The Planner (planner.py) does everything up to the Plan; the Agent takes the
locks, dispatches to the in-place or the reboot path, rolls back an unhealthy
update and repairs the journal. The decision in decide/plan.py stays pure.
"""

import contextlib
import dataclasses
import logging

from update_agent import coordination
from update_agent.apply import health, hooks, inplace as applying, live, window
from update_agent.coordination import node_id as node_ids
from update_agent.decide.rollout.stages import NextKind
from update_agent.decide import plan as planning
from update_agent.errors import AgentError, Interrupted
from update_agent.images.store import ImageStore
from update_agent.node import mounts, trust
from update_agent.node.paths import KEYS_DIR
from update_agent.reboot import steps as rebooting
from update_agent.sources import desired as desired_mod
from update_agent.state import journal as journal_mod, locks
from update_agent.state.store import Store
from update_agent.state.states import Result
from update_agent.state.statecheck import DamagedState
from update_agent.update import rollout
from update_agent.update.fleet import NodeInFleet
from update_agent.update.planner import Planner

LOG = logging.getLogger(__name__)

LOCK_WAIT = 120  # seconds an update waits for another agent run to end


@dataclasses.dataclass
class Outcome:
    """How one update ended, for the CLI, the daemon, Heat and status."""

    image_id: str
    result: Result
    plan: planning.Plan = None
    error: str = ""
    exit_code: int = 0
    started_at: float = 0.0
    duration_s: float = 0.0

    def __post_init__(self):
        self.result = Result(self.result)

    @property
    def ok(self):
        # rebooting: the machine is going down into the new kernel (or, under a
        # sandbox --root, that was recorded); the next start checks it
        return self.result in (Result.SUCCESS, Result.NOOP, Result.REBOOTING)

    def to_dict(self):
        d = self.plan.to_dict() if self.plan is not None else {"image_id": self.image_id}
        d.update(result=self.result, error=self.error, duration_s=round(self.duration_s, 3))
        return d


def _budget(turn):
    """(group, max_holders) of the slots a stage step takes; (None, None): the config's."""
    return (turn.group, turn.max_parallel) if turn is not None else (None, None)


class Agent:
    def __init__(self, paths, config, system, opener=None, read_mounts=mounts.read):
        self.paths = paths
        self.config = config
        self.system = system
        self.read_mounts = read_mounts
        self.state = Store(paths.state_dir)
        self.images = ImageStore(paths.images_dir, config.agent, system, opener=opener,
                                 keys_dir=paths.node(KEYS_DIR), node=paths.node)
        self.planner = Planner(paths, config, system, self.state.journal, self.state.records,
                               self.images, read_mounts)
        self.fleet = NodeInFleet(paths, config, system, self.planner, self._current_image)
        self._prefetched = None  # the Desired staged last before waiting for a stage step

    def _current_image(self):
        return (self.state.records.load().get("current") or {}).get("image_id", "")

    def journal(self):
        """The journal of the update in progress or done last (None), its steps in run
        order for what it says of where it stopped."""
        return rebooting.in_run_order(self.state.journal.load())

    def lock(self, timeout=0):
        return locks.flock(self.paths.agent_lock, "update-agent", timeout=timeout)

    def orc_lock(self):
        # plan and apply under os-refresh-config's lock: nothing it runs can change
        # the root between the plan and the sync
        return locks.flock(self.paths.orc_lock, "os-refresh-config",
                           timeout=self.config.agent.orc_lock_timeout)

    def configure_window(self, opening):
        """os-refresh-config's own run on a read-only root (apply/window.py): open the
        root for it, or close it again; True if this call remounted the root."""
        ctx = applying.Context(self.system, self.paths, self.config, self.state, self.images,
                               read_mounts=self.read_mounts)
        if not opening:
            return window.close_window(ctx)
        j = self.state.journal.load()
        return window.open_window(ctx, journal_mod.mixed_root(j) if j is not None else "")

    def executor(self, should_stop=None, status=None, migrate=True):
        return applying.Executor(self.system, self.paths, self.config, self.state,
                                 self.images, read_mounts=self.read_mounts,
                                 should_stop=should_stop, status=status, migrate=migrate)

    def update(self, want, adopt=False, should_stop=None, on_plan=None, status=None,
               force_reboot=False, force=False, rollback=False):
        """Plan and act on the plan; never raises AgentError. Under a fleet rollout
        policy, only in the stage steps the rollout gives this node.

        force_reboot: an operator's `update-agent reboot`: take the reboot path
        whatever the reboot policy says."""
        def once(turn=None):
            return self._update(want, adopt, should_stop, on_plan, status, force_reboot,
                                force, rollback, turn)
        if rollback:  # the way back never waits for the fleet
            return once()
        try:
            gate = self.fleet.gate_for(want)
            if gate is None:
                return once()
            staged = self._prefetch(want, adopt, force)
            if staged is not None:
                return staged
            # this update's own gate, whatever the heartbeat thread does meanwhile
            return rollout.run(gate, want.image_id, self._current_image(), once,
                               lambda why: self._not_yet(want, why))
        except AgentError as e:
            return Outcome(want.image_id, Result.FAILED if e.exit_code == 1 else Result.REFUSED,
                           None, str(e), e.exit_code)

    def beat(self):
        """The member record's heartbeat (the daemon's thread)."""
        self.fleet.beat()

    def rollout_preview(self, want):
        return self.fleet.preview(want)

    def _prefetch(self, want, adopt, force):
        """Download before taking a stage step, which the download would hold up:
        None when staged (or none needed), else the Outcome of the failure."""
        if self._prefetched == want:
            return None  # a node waiting for its turn looks again, and downloads once
        try:
            with self.lock(timeout=LOCK_WAIT):
                self.planner.check_trust()
                self.planner.stage(want, adopt=adopt, force=force)
        except trust.Untrusted as e:
            return Outcome(want.image_id, Result.REFUSED, None, str(e), e.exit_code)
        except AgentError as e:
            return Outcome(want.image_id, Result.FAILED, None, str(e), e.exit_code)
        self._prefetched = want
        return None

    def _not_yet(self, want, why):
        result = Result.WAITING if why.kind == NextKind.WAIT else Result.HALTED
        return Outcome(want.image_id, result, None, why.reason, 1)

    def _update(self, want, adopt, should_stop, on_plan, status, force_reboot, force, rollback,
                turn):
        started = self.system.clock()
        plan = None
        migrate = turn is None or turn.runs(hooks.MIGRATION)

        def outcome(result, error="", code=0):
            return Outcome(want.image_id, result, plan, error, code, started,
                           self.system.clock() - started)
        try:
            # an operator's --dry-run or status holds the lock briefly: wait for it
            with self.lock(timeout=LOCK_WAIT):
                self.planner.check_trust()
                if force_reboot:
                    self._forget_failed_boot()
                # the download is bounded by download_timeout and runs without
                # os-refresh-config's lock; plan and apply take it
                staged = self.planner.stage(want, adopt=adopt, rollback=rollback, force=force)
                with self.orc_lock(), self.planner.planned(want, adopt=adopt, rollback=rollback,
                                                           force=force, staged=staged,
                                                           fetch=True) as planned:
                    plan = planned.plan
                    if on_plan:
                        on_plan(plan)
                    if plan.action == planning.NOOP:
                        return outcome(Result.NOOP)
                    executor = self.executor(should_stop, status, migrate)
                    if plan.action in (planning.IN_PLACE, planning.ROLLBACK):
                        with self._in_place_slot(should_stop, turn):
                            record = executor.apply(plan, planned.facts, planned.tree,
                                                    planned.image_entries, replan=planned.replan)
                        self._release_reboot_slot(executor.journal)
                        problems = self._health(plan, executor.failed_before())
                        if problems:
                            return self._unhealthy(want, plan, problems, outcome, rollback)
                        live.restart_self(self.system, self.paths, self.config.restart,
                                          (record.get("restarts") or {}).get("agent"))
                        return outcome(Result.SUCCESS)
                    if plan.action == planning.REBOOT:
                        return self._reboot_path(want, plan, planned, outcome, should_stop,
                                                 status, force_reboot, migrate, turn)
                    note = self._relock_partial(executor, plan)
                    refusals = [r for r in plan.reasons if not r.startswith("image_id ")]
                    return outcome(Result.REFUSED, "refused to apply image %s: %s%s"
                                   % (plan.image_id, "; ".join(refusals or plan.reasons),
                                      "; " + note if note else ""), 1)
        except Interrupted as e:
            return outcome(Result.INTERRUPTED, str(e), 1)
        except trust.Untrusted as e:
            return outcome(Result.REFUSED, str(e), e.exit_code)
        except AgentError as e:
            return outcome(Result.FAILED, str(e), e.exit_code)

    def remember(self, outcome, want=None):
        """Keep an outcome for `status` (the daemon keeps its own the same way): a
        failed download then shows, not the no-op or success before it. Never into
        a state dir that is not trusted: the refusal said so, on stderr."""
        try:
            self.planner.check_state_trust()
        except trust.Untrusted:
            return
        status = self.state.flags.load_status()
        status.update(last_result=outcome.to_dict(), updated_at=self.system.clock())
        if want is not None:  # what the metadata asked for, as the daemon records it
            status["desired"] = want.to_dict()
        status.pop("last_error", None)  # that error came before this outcome
        try:
            self.state.flags.save_status(status)
        except OSError as e:
            LOG.warning("cannot write status: %s", e)

    # --- health and rollback -------------------------------------------
    def _health(self, plan, before):
        env = hooks.hook_env(self.paths, plan.image_id, plan.current_image_id, plan.action)
        return health.check(self.system, self.paths, self.config.health, env, before)

    def _unhealthy(self, want, plan, problems, outcome, rolling_back):
        why = "health check failed after %s to %s: %s" % (plan.action, plan.image_id,
                                                          "; ".join(problems))
        if rolling_back or not self.config.health.rollback:
            return outcome(Result.UNHEALTHY, why, 1)
        try:
            self.state.records.reject(plan.image_id, plan.digest, "; ".join(problems), self.system.clock())
        except DamagedState as e:  # the way back matters more than the note that keeps it
            LOG.error("image %s is not recorded as rejected: %s", plan.image_id, e)
        try:
            back = self._rollback_unlocked()
        except AgentError as e:  # keep why we were rolling back in the report
            return outcome(Result.FAILED, "%s; and the rollback failed: %s" % (why, e), 1)
        if back.result != Result.SUCCESS:
            return outcome(Result.FAILED, "%s; and the rollback failed: %s" % (why, back.error), 1)
        return outcome(Result.ROLLED_BACK, "%s; rolled back to %s" % (why, back.image_id), 1)

    def previous(self):
        """The Desired of the previous image, from the cache."""
        prev = self.state.records.load().get("previous") or {}
        staged = self.images.lookup(prev.get("digest", "")) if prev.get("digest") else None
        if not prev.get("image_id") or staged is None:
            raise AgentError("no previous image to roll back to in the cache (%s)"
                             % (prev.get("image_id") or "none recorded"))
        if staged.format == "repo":  # its tree is sparse: what it lacks comes from its repository
            return desired_mod.Desired(prev["image_id"], "", prev["digest"],
                                       repo=self.images.source_url(staged))
        return desired_mod.Desired(prev["image_id"], "file://" + staged.path, prev["digest"])

    def rollback(self, should_stop=None, on_plan=None, status=None):
        """`update-agent rollback`: back to the previous image; the current one is
        rejected, so the daemon does not apply it again."""
        try:
            self.planner.check_trust()
            want = self.previous()
            self.state.journal.load()  # damaged: refused before the current image is rejected
            current = self.state.records.load().get("current") or {}
            if current.get("image_id"):
                self.state.records.reject(current["image_id"], current.get("digest", ""),
                                  "rolled back by an operator", self.system.clock())
        except AgentError as e:
            return Outcome("", Result.REFUSED, None, str(e), e.exit_code)
        return self.update(want, should_stop=should_stop, on_plan=on_plan, status=status,
                           rollback=True)

    def _rollback_unlocked(self):
        # called with the locks held: plan and apply the previous image in the same run
        want = self.previous()
        plan = None
        with self.planner.planned(want, rollback=True, fetch=True) as planned:
            plan = planned.plan
            if plan.action != planning.ROLLBACK:
                return Outcome(want.image_id, Result.REFUSED, plan, "cannot roll back in place: %s"
                               % "; ".join(plan.reasons), 1)
            self.executor().apply(plan, planned.facts, planned.tree, planned.image_entries,
                                  replan=planned.replan)
        return Outcome(want.image_id, Result.SUCCESS, plan)

    # --- the reboot path ---------------------------------------------------
    def _slots(self, turn=None):
        """The group's slots; in a rollout's stage step, the stage's group and its
        max_parallel are the budget, whatever else (a reboot, slot hold) takes from it."""
        c = self.config.coordination
        if not c.backend or c.coordinate == "never":
            return None
        return coordination.reboot_slots(c, node_ids.node_id(c, self.paths), self.system.clock,
                                         *_budget(turn), http=self.system.http)

    def _in_place_slot(self, should_stop=None, turn=None):
        c = self.config.coordination
        if c.backend and c.coordinate == "always":
            return coordination.lease_slot(c, node_ids.node_id(c, self.paths), self.system.clock,
                                           *_budget(turn), should_stop=should_stop,
                                           http=self.system.http)
        return contextlib.nullcontext()

    def _reboot_path(self, want, plan, planned, outcome, should_stop, status, force, migrate=True,
                     turn=None):
        executor = rebooting.RebootExecutor(
            self.system, self.paths, self.config, self.state, self.images,
            read_mounts=self.read_mounts, should_stop=should_stop, status=status,
            slots=self._slots(turn),
            # never this machine under a sandbox root: the executor records instead
            reboot=self.system.reboot if self.paths.is_host_root else None, migrate=migrate)
        j = self.journal()
        if j is not None and j.checks_due_for(want.image_id):
            if j.boot_id and j.boot_id == rebooting.current_boot_id(self.paths):
                # asked to reboot, still the same boot: the machine is going down
                return outcome(Result.REBOOTING)
            try:
                executor.finish(j, self.images.cached_manifest(j.digest))
            except applying.StepFailed as e:
                if e.step == "health":
                    return outcome(Result.UNHEALTHY, str(e), 1)
                raise
            return outcome(Result.SUCCESS)
        policy = "auto" if force else (want.reboot or self.config.agent.reboot)
        why = "image %s needs kernel %s (running %s)" % (plan.image_id, plan.image_kernel,
                                                        plan.running_kernel)
        if policy != "auto":
            note = self._relock_partial(executor, plan)
            if policy == "never":
                return outcome(Result.REFUSED, "%s and reboot = never; %s"
                               % (why, note or "nothing was changed"), 1)
            return outcome(Result.REBOOT_REQUIRED, "%s: reboot required (reboot = manual): run "
                           "`update-agent reboot`; %s" % (why, note or "nothing was changed"), 1)
        if executor.slots is not None and j is not None and j.holds_slot():
            # an unhealthy node's next image keeps the slot its last reboot took
            executor.slots.node = j.slot_node
        try:
            executor.start(plan, planned.facts, planned.tree, planned.image_entries)
        except rebooting.WaitingForSlot as e:
            return outcome(Result.WAITING, "%s; %s" % (why, e), 1)
        return outcome(Result.REBOOTING)

    def _release_reboot_slot(self, j):
        """The in-place update j replaced a reboot that left the node unhealthy (and
        maybe failed updates after it, which kept the debt): the node is up on a new
        image, so the slot that reboot took goes back."""
        if not j.holds_slot():
            return
        slots = self._slots()
        if slots is not None:
            slots.node = j.slot_node
            try:
                slots.release()
            except AgentError as e:  # the update is done: the debt stays in the journal
                LOG.warning("the reboot slot held as node %s is not given back yet: %s; the next "
                            "update gives it back, or `update-agent slot release`", j.slot_node, e)
                return
            LOG.info("released the reboot slot an unhealthy reboot took, as node %s", j.slot_node)
        j.give_back_slot()
        self.state.journal.save(j)

    def _forget_failed_boot(self):
        """An operator asks for the reboot again after one that came back on the old
        kernel: that failure no longer blocks (it stays in the history)."""
        j = self.state.journal.load()
        if j is not None and j.came_back_on_old_kernel:
            j.supersede()
            self.state.journal.save(j)

    def _relock_partial(self, executor, plan):
        """After a crash mid-update the root may be writable: never leave it so."""
        j = self.journal()
        if j is None or not j.unfinished or not j.root_was_ro:
            return ""
        executor.remount_ro()
        return ("the root holds a partial update to %s (stopped at step %s); it is read-only "
                "again" % (j.image_id, j.failed_step or j.stopped_at()))
