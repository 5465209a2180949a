"""The thin executor: run an in-place plan as journaled steps.

Order follows os-refresh-config's phases: pre-configure quiesces, the sync
and the commit happen while services are quiet, configure renders config with
the root still writable, post-configure activates. Every step is journaled
before it starts and after it ends; a killed agent resumes at the step where it
stopped (rsync is idempotent). On failure, interruption or exception the
root is remounted read-only if it was read-only before; the journal remembers
that, so a run resuming after a crash does it too. The caller holds
os-refresh-config's lock for the whole plan-and-apply.
"""

import logging
import os
import time

from update_agent.apply import health, hooks, live, sync, verify
from update_agent.errors import AgentError, Interrupted
from update_agent.logs import log_fields
from update_agent.node import busy, facts as facts_mod, mounts
from update_agent.state import journal as journaling, statefile

LOG = logging.getLogger(__name__)

STEPS = journaling.STEPS
(PRE_CONFIGURE, REMOUNT_RW, PIN, SYNC, VERIFY, COMMIT, CONFIGURE, POST_CONFIGURE, MIGRATION,
 RESTART, REMOUNT_RO) = STEPS


class StepFailed(AgentError):
    def __init__(self, step, error):
        self.step = step
        super().__init__("step %s failed: %s" % (step, error))


class Executor:
    def __init__(self, system, paths, config, state, images, read_mounts=mounts.read,
                 sleep=time.sleep, should_stop=None, status=None):
        self.system = system
        self.paths = paths
        self.config = config
        self.state = state          # journal.Store
        self.images = images        # images.store.ImageStore
        self.read_mounts = read_mounts
        self.sleep = sleep
        self.should_stop = should_stop or (lambda: False)
        self.status = status or (lambda text: None)
        self._plan = None           # the plan being applied (a replan may replace it)
        self._facts = None          # the facts it was made on (with the mounts it saw)
        self.journal = None         # the journal of the update being applied

    # --- the steps -------------------------------------------------------
    def _root_read_only(self):
        m = mounts.mount_of(self.read_mounts(), self.paths.root)
        return bool(m and m.read_only)

    def _remount(self, mode):
        self.system.run([self.system.which("mount"), "-o", "remount," + mode, self.paths.root])

    def remount_rw(self):
        if self._root_read_only():
            LOG.info("remounting %s read-write", self.paths.root)
            self._remount("rw")

    def remount_ro(self):
        if self._root_read_only():
            return
        self.system.run([self.system.which("sync"), "--file-system", self.paths.root])
        tries = max(1, self.config.agent.remount_retries)
        for attempt in range(tries):
            try:
                self._remount("ro")
                LOG.info("remounted %s read-only", self.paths.root)
                return
            except AgentError as e:
                last = e
                if attempt + 1 < tries:
                    self.sleep(1)
        raise AgentError("cannot remount %s read-only (%s): %s"
                         % (self.paths.root, last, busy.describe(busy.culprits(self.paths.root))))

    def commit(self, plan, j, image_tree):
        path = self.paths.image_id_file
        facts_mod.save_account_base(image_tree, self.paths.accounts_base)
        statefile.write_atomic(path, (plan.image_id + "\n").encode(), mode=0o644, uid=0, gid=0)
        self._keep_image_time(os.path.dirname(path), image_tree)
        self.state.commit_state(plan.image_id, plan.digest, j.previous_image_id, j.previous_digest)
        LOG.info("committed image_id %s", plan.image_id)

    def _keep_image_time(self, node_dir, image_tree):
        """The commit's rename wrote into /etc after the sync set its time: set it back
        to the image's, so that tools trusting mtimes see the image."""
        rel = os.path.relpath(node_dir, self.paths.root)
        try:
            st = os.lstat(os.path.join(image_tree, rel))
            os.utime(node_dir, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        except OSError as e:
            LOG.debug("the time of %s is not the image's: %s", node_dir, e)

    # --- the run ---------------------------------------------------------
    def _journal_for(self, plan, facts):
        old = self.state.load_journal()
        if plan.resume and old is not None:
            old.digest = plan.digest  # the same image_id may now name a rebuilt image
            return old
        # previous is what the node has committed (a superseded update may have committed)
        current = self.state.load_state().get("current") or {}
        previous = facts.current_image_id
        previous_digest = current.get("digest", "") if current.get("image_id") == previous else ""
        return journaling.Journal(
            image_id=plan.image_id, digest=plan.digest, previous_image_id=previous,
            previous_digest=previous_digest, action=plan.action, root_was_ro=plan.root_was_ro,
            started_at=self.system.clock(), steps={s: "pending" for s in STEPS},
            # the slot an unhealthy reboot took stays owed until an update succeeds
            slot_node=old.slot_node if old is not None and old.holds_slot() else "")

    def _note_failed_units(self, j):
        """The units failed before the update, for the health check after it: noted
        before anything changes; a resumed update keeps what its first attempt saw
        (units failed since may be the update's doing: a crash mid-update)."""
        if j.failed_units is None or not any(state == "done" for state in j.steps.values()):
            units = health.failed_units(self.system, self.paths)
            j.failed_units = sorted(units) if units is not None else None

    def failed_before(self):
        """The units failed before the update applied last (None: systemd does not run the root)."""
        units = self.journal.failed_units if self.journal is not None else None
        return set(units) if units is not None else None

    def apply(self, plan, facts, image_tree, image_entries, replan=None):
        """Run the plan; return the history record. Raises StepFailed or Interrupted.

        replan() gives a fresh update.Planned once the services are quiet, so that
        what they wrote while stopping is in the change set.
        """
        self._plan, self._facts = plan, facts
        j = self.journal = self._journal_for(plan, facts)
        self._note_failed_units(j)
        j.status, j.failed_step, j.error = "running", "", ""
        self.state.save_journal(j)
        env = hooks.hook_env(self.paths, plan.image_id, j.previous_image_id, plan.action)

        def quiesce():
            self._phase(hooks.PRE_CONFIGURE, env)
            if replan is not None:
                fresh = replan()
                if fresh.plan.action != plan.action:
                    raise AgentError("after the pre-configure hooks the plan became %s: %s"
                                     % (fresh.plan.action, "; ".join(fresh.plan.reasons)))
                self._plan, self._facts = fresh.plan, fresh.facts
        actions = {
            PRE_CONFIGURE: quiesce,
            REMOUNT_RW: self.remount_rw,
            PIN: lambda: live.pin(self.paths.root, self._plan.restarts, self.paths.work_dir,
                                    clock=self.system.clock),
            SYNC: lambda: self._sync(self._plan, self._facts, image_tree, image_entries),
            VERIFY: lambda: self._verify(self._plan, self._facts, image_entries),
            COMMIT: lambda: self.commit(self._plan, j, image_tree),
            CONFIGURE: lambda: self._phase(hooks.CONFIGURE, env),
            POST_CONFIGURE: lambda: self._phase(hooks.POST_CONFIGURE, env),
            MIGRATION: lambda: self._phase(hooks.MIGRATION, env),
            RESTART: lambda: self._restart(j),
            REMOUNT_RO: (self.remount_ro if j.root_was_ro else lambda: None),
        }
        self.run_steps(j, STEPS, actions, env, lambda step: self._skip(j, step, self._plan))
        j.status = "done"
        self.state.save_journal(j)
        record = self._record(j, "success", "")
        self.state.append_history(record)
        self.images.retain([j.digest, j.previous_digest])
        return record

    def _sync(self, plan, facts, image_tree, image_entries):
        # what to leave alone, with the mounts as they are now: a pre-configure hook
        # may have mounted a volume under the root since the plan was made
        now = facts_mod.with_current_mounts(facts, self.read_mounts())
        sync.sync(self.system, plan, image_tree, image_entries, self.paths.root, now.excluded,
                  self.paths.work_dir, status=self.status)

    def _verify(self, plan, facts, image_entries):
        # left alone as the sync left it: the mounts as they are now
        now = facts_mod.with_current_mounts(facts, self.read_mounts())
        verify.check(self.paths.root, plan, image_entries, now.excluded)
        LOG.info("verified %d paths against the image", len(plan.changes.transfer)
                 + len(plan.accounts) + len(plan.changes.deleted_top))

    def _phase(self, phase, env):
        hooks.run_phase(self.system, self.paths, phase, env, self.config.agent.hook_timeout)

    def run_steps(self, j, steps, actions, env, skip):
        """Run steps in order, each journaled before and after; skip(step) says which
        are done already. A stop request is honoured between steps. Any failure runs
        error.d and leaves the root read-only (if it was), then is raised."""
        step = None
        try:
            for step in steps:
                if skip(step):
                    LOG.info("step %s: already done", step)
                    continue
                if self.should_stop():
                    raise Interrupted("stopped before step %s, as asked; the next start "
                                      "resumes the update" % step)
                LOG.info("step %s: start", step, extra=log_fields(j.image_id, j.action, step))
                self.status("%s to %s: %s" % (j.action, j.image_id, step))
                self.state.step(j, step, "started")
                began = self.system.monotonic()
                actions[step]()
                j.step_s[step] = round(self.system.monotonic() - began, 3)
                LOG.info("step %s: done in %.2f s", step, j.step_s[step],
                         extra=log_fields(j.image_id, j.action, step))
                self.state.step(j, step, "done")
        except Interrupted as e:
            self._fail(j, step, e, env, result="interrupted")
            raise
        except Exception as e:
            if self._waiting(e):
                raise
            self._fail(j, step, e, env, result=getattr(e, "result", "failed"))
            raise StepFailed(step, e)
        except BaseException as e:  # KeyboardInterrupt, SystemExit: still leave a sane node
            self._fail(j, step, "%s" % (type(e).__name__), env, result="interrupted")
            raise

    def _waiting(self, error):
        """A condition to wait out rather than a failure (the reboot path's slot)."""
        return False

    def _restart(self, j):
        j.restarted = live.restart(self.system, self.paths, self.config, self._plan,
                                   self.paths.work_dir, self.status)
        self.state.save_journal(j)

    @staticmethod
    def _skip(j, step, plan):
        if step in (REMOUNT_RW, REMOUNT_RO, SYNC, VERIFY, PIN):
            # remounts check the real state; the sync is driven by a fresh plan (empty
            # when done) and ends with a flush, and its verification reads only that
            # plan's change set: always run them
            return False
        if step == PRE_CONFIGURE:
            # services must be quiet for a sync that still has work to do
            return j.done(SYNC) and plan.changes.empty and not plan.accounts
        return j.done(step)

    def _fail(self, j, step, error, env, result="failed"):
        LOG.error("step %s: %s: %s", step, result, error,
                  extra=log_fields(j.image_id, j.action, step, result))
        j.status, j.failed_step, j.error = result, step, str(error)
        # the node first: error.d and read-only again, even if the state dir cannot be
        # written (full, or made read-only by the kernel after I/O errors)
        nothing_ran = step == PRE_CONFIGURE and isinstance(error, hooks.HookRefused)
        if not nothing_ran:
            # undo the quiesce, as os-refresh-config does on a failing script
            err_env = dict(env, UPDATE_AGENT_FAILED_STEP=str(step))
            try:
                self._phase(hooks.ERROR, err_env)
            except AgentError as e:
                LOG.error("error.d hooks failed too: %s", e)
        if j.root_was_ro:
            try:
                self.remount_ro()
            except AgentError as e:
                j.error += "; and the root is still read-write: %s" % e
                LOG.error("%s", e)
        try:
            self.state.save_journal(j)
            self.state.append_history(self._record(j, result, j.error))
        except OSError as e:
            LOG.error("cannot record the failure in %s: %s", self.paths.state_dir, e)

    def _record(self, j, result, error, plan=None):
        plan = plan or self._plan
        ended = self.system.clock()
        record = {"image_id": j.image_id, "previous_image_id": j.previous_image_id,
                  "action": j.action, "result": result, "step": j.failed_step, "error": error,
                  "started_at": j.started_at, "ended_at": ended, "restarts": j.restarted,
                  "duration_s": round(ended - j.started_at, 3), "step_s": dict(j.step_s)}
        if result != "success" and j.mixed:
            record["root"] = journaling.mixed_root(j)
        if plan is not None and plan.changes is not None:
            record["changes"] = plan.to_dict()["changes"]
            record["changes"].pop("sample", None)
            record["change_list"] = self.state.save_change_list(j.started_at, j.image_id, plan)
        return record
