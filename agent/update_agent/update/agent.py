"""One update, as data flowing through the agent:

metadata -> Desired -> staged image -> manifests + facts -> Plan -> apply -> record.

The CLI (and later the daemon) wires these together; each stage lives in its
own module and the decision in plan.py stays pure.
"""

import contextlib
import dataclasses
import logging
import os
import posixpath

from update_agent import coordination, sources
from update_agent.apply import health, hooks, inplace as applying, live
from update_agent.coordination import node_id as node_ids
from update_agent.decide import plan as planning
from update_agent.errors import AgentError, Interrupted
from update_agent.images import formats
from update_agent.images.store import ImageStore
from update_agent.node import facts as facts_mod, manifest, mounts, processes, trust
from update_agent.node.paths import KEYS_DIR
from update_agent.reboot import steps as rebooting
from update_agent.sources import desired as desired_mod
from update_agent.state import journal, locks
from update_agent.state.states import Result
from update_agent.state.statecheck import DamagedState

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


@dataclasses.dataclass
class Planned:
    plan: planning.Plan
    facts: facts_mod.Facts
    tree: str = ""
    image_entries: dict = None
    replan: object = None


class Agent:
    def __init__(self, paths, config, system, opener=None, read_mounts=mounts.read):
        self.paths = paths
        self.config = config
        self.system = system
        self.read_mounts = read_mounts
        self.state = journal.Store(paths.state_dir)
        self.images = ImageStore(paths.images_dir, config.agent, system, opener=opener,
                                 keys_dir=paths.node(KEYS_DIR), node=paths.node)
        self._open_images = 0

    def _closed_image(self):
        self._open_images -= 1

    def check_state_trust(self):
        """Refuse (trust.Untrusted) a state dir that anyone but root could write: its
        journal, cached images and work dir steer what the agent does as root."""
        state = self.paths.state_dir_node
        for node in (state, posixpath.join(state, "work"), posixpath.join(state, "images")):
            trust.check(self.paths.root, node, "state dir", missing_ok=True)

    def check_trust(self):
        """Before an update reads or changes anything: the state dir, the signature
        keys and every hook phase it may run must be trusted (trust.Untrusted)."""
        self.check_state_trust()
        keys = trust.check(self.paths.root, KEYS_DIR, "signature keys", missing_ok=True)
        for name in sorted(os.listdir(keys)) if os.path.isdir(keys) else ():
            if name.endswith(".pub"):  # what signature.load_keys reads, through the host's links
                judged = trust.check(self.paths.root, posixpath.join(KEYS_DIR, name), "signature key")
                trust.same_on_host(os.path.join(keys, name), judged, "signature key")
        for phase in hooks.PHASES + (rebooting.BOOTLOADER, health.PHASE):
            hooks.check_phase_dir(self.paths, phase)

    def desired(self, metadata_files=()):
        metadata = sources.read_metadata(self.paths, metadata_files)
        return desired_mod.from_metadata(metadata, self.config.agent.image_url_template)

    def journal(self):
        """The journal of the update in progress or done last (None), its steps in run
        order for what it says of where it stopped."""
        return rebooting.in_run_order(self.state.load_journal())

    def facts(self):
        return facts_mod.gather(self.paths, self.config, self.read_mounts())

    def _early(self, want, adopt=False, rollback=False, force=False):
        """(facts, journal, rejected, the Plan if it needs no image, else None)."""
        facts = self.facts()
        j = self.journal()
        # read here even when unused (--force ignores the rejections): damage stops the
        # update before the download, not when a failed health check must roll back
        self.state.load_state()
        rejected = self.state.rejected()
        rejected = {} if force or rollback else rejected
        return facts, j, rejected, planning.preflight(want, facts, j, adopt, rejected)

    def stage(self, want, adopt=False, rollback=False, force=False):
        """Download and verify the image, unless the plan needs none (None then).

        Called under the agent's lock only: a download may take long, and
        os-refresh-config must be free to run meanwhile."""
        *_, early = self._early(want, adopt, rollback, force)
        return None if early is not None else self.images.stage(want)

    @contextlib.contextmanager
    def planned(self, want, adopt=False, rollback=False, force=False, staged=None):
        """Yield a Planned; the image stays open (mounted) inside the block.

        rollback: plan the return to the previous image (action rollback);
        force: apply an image even though it was rolled back from before;
        staged: the image stage() already fetched for want."""
        self.check_trust()
        facts, j, rejected, early = self._early(want, adopt, rollback, force)
        if early is not None:
            yield Planned(early, facts)
            return
        staged = staged or self.images.stage(want)
        try:
            os.makedirs(self.paths.work_dir, mode=0o700, exist_ok=True)
        except OSError as e:
            raise AgentError("cannot make the work dir %s: %s" % (self.paths.work_dir, e.strerror))
        if not self._open_images:
            # what a killed run left; never what this run has open (a rollback plans
            # the previous image while the new one is still mounted)
            formats.cleanup(self.system, self.paths.work_dir, self.read_mounts())
        with contextlib.ExitStack() as stack:
            self._open_images += 1
            stack.callback(self._closed_image)
            try:
                tree = stack.enter_context(
                    formats.open_tree(staged.path, self.system, self.paths.work_dir))
            except AgentError:
                # a cached image that no longer opens may have been torn by a crash:
                # if it fails its digest, drop it so that the next attempt fetches it
                # again; if it is intact, the trouble is elsewhere (no loop device, say)
                if staged.format != "directory" and not self.images.intact(staged):
                    self.images.evict(staged)
                raise
            image_entries = self.images.manifest(staged, tree)
            planned = Planned(None, facts, tree, image_entries)
            walked = {}

            def replan():
                # planned.facts become those the plan saw: the executor leaves the same
                # mounts alone, and a mount is reported once, when first seen
                planned.plan, planned.facts = self._decide(
                    want, planned.facts, j, staged, tree, image_entries, adopt, rejected,
                    rollback, walked)
                return planned
            planned.replan = replan
            replan()
            yield planned

    def _decide(self, want, facts, j, staged, tree, image_entries, adopt, rejected=None,
                rollback=False, walked=None):
        """walked: the node's side of an earlier plan in this run, reused (and filled in)
        while the root provably has not changed since: the replan after pre-configure
        then costs a process scan, not a second walk of the whole root.
        Returns the plan and the facts, with the mounts as they are now."""
        walked = {} if walked is None else walked
        mountinfo = self.read_mounts()
        # a pre-configure hook may have mounted a volume under the root: walk around it
        facts = facts_mod.with_current_mounts(facts, mountinfo)
        token = facts_mod.unwritten_token(mountinfo, facts.root)
        if token is not None and walked.get("token") == token:
            LOG.info("the root was not written since it was walked: the walk is reused")
        else:
            node_entries, sigs, protected, cached = facts_mod.node_manifest(
                facts, self.paths.node_manifest)
            self._save_node_cache(node_entries, sigs, unchanged=cached)
            walked.update(token=token, entries=node_entries, sigs=sigs, protected=protected,
                          accounts=facts_mod.account_files(facts.root, tree, facts.excluded,
                                                           self.paths.accounts_base))
        # read every time: /boot may be a filesystem of its own, which the token does not watch
        running_vmlinuz = facts_mod.running_vmlinuz(self.paths, facts.release,
                                                    planning.running_in_copy(facts, j))
        procs = processes.scan(facts.root)
        imports = {p.pid: processes.python_imports(p, self.paths.node) for p in procs}
        plan = planning.decide(want, facts, j, self.config, staged.digest, walked["entries"],
                               image_entries, walked["accounts"], adopt, walked["protected"],
                               running_vmlinuz=running_vmlinuz, node_sigs=walked["sigs"], procs=procs,
                               imports=imports, agent_pid=os.getpid(), rejected=rejected,
                               rollback=rollback)
        return plan, facts

    def _save_node_cache(self, entries, sigs, unchanged=False):
        try:
            if unchanged:
                # the same lines again: only the time their hashes stand for moves on
                os.utime(self.paths.node_manifest)
            else:
                manifest.save(self.paths.node_manifest, entries, sigs)
        except OSError as e:
            LOG.debug("node manifest cache not saved: %s", e)

    def lock(self, timeout=0):
        return locks.flock(self.paths.agent_lock, "update-agent", timeout=timeout)

    def orc_lock(self):
        # plan and apply under os-refresh-config's lock: nothing it runs can change
        # the root between the plan and the sync
        return locks.flock(self.paths.orc_lock, "os-refresh-config",
                           timeout=self.config.agent.orc_lock_timeout)

    def executor(self, should_stop=None, status=None):
        return applying.Executor(self.system, self.paths, self.config, self.state,
                                 self.images, read_mounts=self.read_mounts,
                                 should_stop=should_stop, status=status)

    def update(self, want, adopt=False, should_stop=None, on_plan=None, status=None,
               force_reboot=False, force=False, rollback=False):
        """Plan and act on the plan; never raises AgentError.

        force_reboot: an operator's `update-agent reboot`: take the reboot path
        whatever the reboot policy says."""
        started = self.system.clock()
        plan = None

        def outcome(result, error="", code=0):
            return Outcome(want.image_id, result, plan, error, code, started,
                           self.system.clock() - started)
        try:
            # an operator's --dry-run or status holds the lock briefly: wait for it
            with self.lock(timeout=LOCK_WAIT):
                self.check_trust()
                if force_reboot:
                    self._forget_failed_boot()
                # the download is bounded by download_timeout and runs without
                # os-refresh-config's lock; plan and apply take it
                staged = self.stage(want, adopt=adopt, rollback=rollback, force=force)
                with self.orc_lock(), self.planned(want, adopt=adopt, rollback=rollback,
                                                   force=force, staged=staged) as planned:
                    plan = planned.plan
                    if on_plan:
                        on_plan(plan)
                    if plan.action == planning.NOOP:
                        return outcome(Result.NOOP)
                    executor = self.executor(should_stop, status)
                    if plan.action in (planning.IN_PLACE, planning.ROLLBACK):
                        with self._in_place_slot(should_stop):
                            record = executor.apply(plan, planned.facts, planned.tree,
                                                    planned.image_entries, replan=planned.replan)
                        self._release_reboot_slot(executor.journal)
                        problems = self._health(plan, executor.failed_before())
                        if problems:
                            return self._unhealthy(want, plan, problems, outcome, rollback)
                        live.restart_self(self.system, self.paths, self.config,
                                          (record.get("restarts") or {}).get("agent"))
                        return outcome(Result.SUCCESS)
                    if plan.action == planning.REBOOT:
                        return self._reboot_path(want, plan, planned, outcome, should_stop,
                                                 status, force_reboot)
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
            self.check_state_trust()
        except trust.Untrusted:
            return
        status = self.state.load_status()
        status.update(last_result=outcome.to_dict(), updated_at=self.system.clock())
        if want is not None:  # what the metadata asked for, as the daemon records it
            status["desired"] = want.to_dict()
        status.pop("last_error", None)  # that error came before this outcome
        try:
            self.state.save_status(status)
        except OSError as e:
            LOG.warning("cannot write status: %s", e)

    # --- health and rollback -------------------------------------------
    def _health(self, plan, before):
        env = hooks.hook_env(self.paths, plan.image_id, plan.current_image_id, plan.action)
        return health.check(self.system, self.paths, self.config, env, before)

    def _unhealthy(self, want, plan, problems, outcome, rolling_back):
        why = "health check failed after %s to %s: %s" % (plan.action, plan.image_id,
                                                          "; ".join(problems))
        if rolling_back or not self.config.health.rollback:
            return outcome(Result.UNHEALTHY, why, 1)
        try:
            self.state.reject(plan.image_id, plan.digest, "; ".join(problems), self.system.clock())
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
        prev = self.state.load_state().get("previous") or {}
        staged = self.images.lookup(prev.get("digest", "")) if prev.get("digest") else None
        if not prev.get("image_id") or staged is None:
            raise AgentError("no previous image to roll back to in the cache (%s)"
                             % (prev.get("image_id") or "none recorded"))
        return desired_mod.Desired(prev["image_id"], "file://" + staged.path, prev["digest"])

    def rollback(self, should_stop=None, on_plan=None, status=None):
        """`update-agent rollback`: back to the previous image; the current one is
        rejected, so the daemon does not apply it again."""
        try:
            self.check_trust()
            want = self.previous()
            self.state.load_journal()  # damaged: refused before the current image is rejected
            current = self.state.load_state().get("current") or {}
            if current.get("image_id"):
                self.state.reject(current["image_id"], current.get("digest", ""),
                                  "rolled back by an operator", self.system.clock())
        except AgentError as e:
            return Outcome("", Result.REFUSED, None, str(e), e.exit_code)
        return self.update(want, should_stop=should_stop, on_plan=on_plan, status=status,
                           rollback=True)

    def _rollback_unlocked(self):
        # called with the locks held: plan and apply the previous image in the same run
        want = self.previous()
        plan = None
        with self.planned(want, rollback=True) as planned:
            plan = planned.plan
            if plan.action != planning.ROLLBACK:
                return Outcome(want.image_id, Result.REFUSED, plan, "cannot roll back in place: %s"
                               % "; ".join(plan.reasons), 1)
            self.executor().apply(plan, planned.facts, planned.tree, planned.image_entries,
                                  replan=planned.replan)
        return Outcome(want.image_id, Result.SUCCESS, plan)

    # --- the reboot path ---------------------------------------------------
    def _slots(self):
        c = self.config.coordination
        if not c.backend or c.coordinate == "never":
            return None
        return coordination.reboot_slots(c, node_ids.node_id(c, self.paths), self.system.clock)

    def _in_place_slot(self, should_stop=None):
        c = self.config.coordination
        if c.backend and c.coordinate == "always":
            return coordination.lease_slot(c, node_ids.node_id(c, self.paths), should_stop=should_stop)
        return contextlib.nullcontext()

    def _reboot_now(self, method, load=None):
        if load:
            r = self.system.run(load, check=False)
            if r.returncode != 0:
                # the firmware and the boot loader still reach the new kernel, once
                LOG.warning("`%s` failed (%s): rebooting through the boot loader instead",
                            " ".join(load), (r.stderr or r.stdout or "").strip() or r.returncode)
                method = "reboot"
        self.system.run([self.system.which("systemctl"), method])

    def _reboot_path(self, want, plan, planned, outcome, should_stop, status, force):
        executor = rebooting.RebootExecutor(
            self.system, self.paths, self.config, self.state, self.images,
            read_mounts=self.read_mounts, should_stop=should_stop, status=status,
            slots=self._slots(),
            # never this machine under a sandbox root: the executor records instead
            reboot=self._reboot_now if self.paths.is_host_root else None)
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
        self.state.save_journal(j)

    def _forget_failed_boot(self):
        """An operator asks for the reboot again after one that came back on the old
        kernel: that failure no longer blocks (it stays in the history)."""
        j = self.state.load_journal()
        if j is not None and j.action == "reboot" and j.failed_step == "boot-check":
            j.supersede()
            self.state.save_journal(j)

    def _relock_partial(self, executor, plan):
        """After a crash mid-update the root may be writable: never leave it so."""
        j = self.journal()
        if j is None or not j.unfinished or not j.root_was_ro:
            return ""
        executor.remount_ro()
        return ("the root holds a partial update to %s (stopped at step %s); it is read-only "
                "again" % (j.image_id, j.failed_step or j.stopped_at()))
