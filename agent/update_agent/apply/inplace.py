"""The in-place path: its steps, and the thin executor that runs them.

Order follows os-refresh-config's phases: pre-configure quiesces, the sync
and the commit happen while services are quiet, configure renders config with
the root still writable, post-configure activates. The runner (apply/steps.py)
journals every step before it starts and after it ends; a killed agent resumes
at the step where it stopped (rsync is idempotent). On failure, interruption or
exception the root is remounted read-only if it was read-only before; the
journal remembers that, so a run resuming after a crash does it too. The caller
holds os-refresh-config's lock for the whole plan-and-apply.
"""

import dataclasses
import logging
import os
import time

from update_agent.apply import hooks, live, remount, sync, verify
from update_agent.apply.steps import (  # noqa: F401 (StepFailed: raised from here for callers)
    Context, Runner, Step, StepFailed, journal_for, names, note_failed_units, phase, run_phase)
from update_agent.errors import AgentError
from update_agent.node import facts as facts_mod, kept, mounts
from update_agent.state import statefile

LOG = logging.getLogger(__name__)


# --- the steps: functions of the run's Context ---------------------------
def quiesce(ctx):
    """pre-configure; then replan, so that what services wrote while stopping is
    in the change set."""
    run_phase(ctx, hooks.PRE_CONFIGURE)
    if ctx.replan is not None:
        fresh = ctx.replan()
        if fresh.plan.action != ctx.plan.action:
            raise AgentError("after the pre-configure hooks the plan became %s: %s"
                             % (fresh.plan.action, "; ".join(fresh.plan.reasons)))
        ctx.plan, ctx.facts = fresh.plan, fresh.facts


def quiet_not_needed(ctx):
    # services must be quiet for a sync that still has work to do
    return ctx.journal.done("sync") and ctx.plan.changes.empty and not ctx.plan.accounts


def pin(ctx):
    # replaced inodes still in use, linked: else remount,ro is refused
    live.pin(ctx.paths.root, ctx.plan.restarts, ctx.paths.work_dir, clock=ctx.system.clock)
    # a repository image's rollback takes what the sync replaces from these links
    kept.keep(ctx.paths.root, ctx.plan.digest, ctx.plan.kept_for_rollback)


def sync_root(ctx):
    # what to leave alone, with the mounts as they are now: a pre-configure hook
    # may have mounted a volume under the root since the plan was made
    now = facts_mod.with_current_mounts(ctx.facts, ctx.read_mounts())
    sync.sync(ctx.system, ctx.plan, ctx.image_tree, ctx.image_entries, ctx.paths.root,
              now.excluded, ctx.paths.work_dir, status=ctx.status)


def verify_root(ctx):
    # left alone as the sync left it: the mounts as they are now
    plan = ctx.plan
    now = facts_mod.with_current_mounts(ctx.facts, ctx.read_mounts())
    verify.check(ctx.paths.root, plan, ctx.image_entries, now.excluded)
    LOG.info("verified %d paths against the image", len(plan.changes.transfer)
             + len(plan.accounts) + len(plan.changes.deleted_top))


def commit(ctx):
    plan, j, paths = ctx.plan, ctx.journal, ctx.paths
    path = paths.image_id_file
    facts_mod.save_account_base(ctx.image_tree, paths.accounts_base)
    statefile.write_atomic(path, (plan.image_id + "\n").encode(), mode=0o644, uid=0, gid=0)
    _keep_image_time(paths, os.path.dirname(path), ctx.image_tree)
    ctx.state.records.commit(plan.image_id, plan.digest, j.previous_image_id, j.previous_digest)
    kept.drop_all_but(paths.root, plan.digest)  # a rollback now returns to the previous image
    LOG.info("committed image_id %s", plan.image_id)


def _keep_image_time(paths, node_dir, image_tree):
    """The commit's rename wrote into /etc after the sync set its time: set it back
    to the image's, so that tools trusting mtimes see the image."""
    rel = os.path.relpath(node_dir, paths.root)
    try:
        st = os.lstat(os.path.join(image_tree, rel))
        os.utime(node_dir, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    except OSError as e:
        LOG.debug("the time of %s is not the image's: %s", node_dir, e)


def restart(ctx):
    j = ctx.journal
    j.restarted = live.restart(ctx.system, ctx.paths, ctx.config.restart,
                               ctx.config.agent.hook_timeout, ctx.plan, ctx.paths.work_dir, ctx.status)
    ctx.state.journal.save(j)


# remounts check the real state; the sync is driven by a fresh plan (empty when
# done) and ends with a flush, and its verification reads only that plan's change
# set; pin links what runs now: they run again on resume
PRE_CONFIGURE = Step("pre-configure", quiesce, done_when=quiet_not_needed)
REMOUNT_RW = Step("remount-rw", remount.remount_rw, rerun=True)
PIN = Step("pin", pin, rerun=True, needs_rw=True)
SYNC = Step("sync", sync_root, rerun=True, needs_rw=True)
# the change set matches the image before the commit names it
VERIFY = Step("verify", verify_root, rerun=True)
COMMIT = Step("commit", commit, needs_rw=True)
CONFIGURE = Step("configure", phase(hooks.CONFIGURE), needs_rw=True)
POST_CONFIGURE = Step("post-configure", phase(hooks.POST_CONFIGURE), needs_rw=True)
def migration_elsewhere(ctx):
    """A fleet rollout runs the migration phase in its own stage, on one node."""
    return not ctx.journal.migrate or ctx.journal.done("migration")


MIGRATION = Step("migration", phase(hooks.MIGRATION), needs_rw=True, done_when=migration_elsewhere)
RESTART = Step("restart", restart)
REMOUNT_RO = Step("remount-ro", remount.remount_ro_if_it_was, rerun=True)

IN_PLACE = [PRE_CONFIGURE, REMOUNT_RW, PIN, SYNC, VERIFY, COMMIT, CONFIGURE, POST_CONFIGURE,
            MIGRATION, RESTART, REMOUNT_RO]
STEPS = names(IN_PLACE)  # the journal's step names, in run order


# --- the executor --------------------------------------------------------
class Executor:
    def __init__(self, system, paths, config, state, images, read_mounts=mounts.read,
                 sleep=time.sleep, should_stop=None, status=None, migrate=True):
        self.context = Context(system, paths, config, state, images, read_mounts=read_mounts,
                               sleep=sleep, status=status or (lambda text: None), migrate=migrate)
        self.runner = Runner(should_stop)
        self.journal = None         # the journal of the update being applied

    def remount_ro(self):
        remount.remount_ro(self.context)

    def _note_failed_units(self, j):
        note_failed_units(self.context, j)

    def failed_before(self):
        """The units failed before the update applied last (None: systemd does not run the root)."""
        units = self.journal.failed_units if self.journal is not None else None
        return set(units) if units is not None else None

    def apply(self, plan, facts, image_tree, image_entries, replan=None):
        """Run the plan; return the history record. Raises StepFailed or Interrupted.

        replan() gives a fresh update.Planned once the services are quiet, so that
        what they wrote while stopping is in the change set.
        """
        ctx = dataclasses.replace(self.context, plan=plan, facts=facts, image_tree=image_tree,
                                  image_entries=image_entries, replan=replan)
        j = self.journal = ctx.journal = journal_for(ctx, STEPS)
        note_failed_units(ctx, j)
        ctx.env = hooks.hook_env(ctx.paths, plan.image_id, j.previous_image_id, plan.action)
        return self.runner.run(ctx, IN_PLACE)
