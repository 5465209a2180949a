"""The reboot path: for an image whose kernel is not the running one.

Before the reboot, journaled like the in-place steps: take a fleet slot,
quiesce, sync (/boot included, the running kernel's files kept), commit
/etc/image_id, run the boot-loader hooks (bootloader.d: boot the new kernel
once), flush and remount read-only, reboot (or kexec). With a --root other
than /, the agent never reboots this machine: it records what it would have
done, and the next run takes it from there as after a reboot.

After the reboot, at the next start: check that the planned kernel runs. If
it does: the configure phases, the health checks, drop the old kernel's
files, make the new kernel the default, release the slot. If the node came
back on the old kernel: report the failure, count it against the group,
release the slot, and do not try again on its own. If the node is unhealthy
on the new kernel: report it, count it against the group once, and keep the
slot and the fallback kernel; each later run checks again and finishes once
the node is healthy (a rollback would be another reboot: the operator's call).
"""

import dataclasses
import logging
import os
import time

from update_agent.apply import health, hooks, inplace, remount, sync
from update_agent.apply.steps import (Context, Runner, Step, StepFailed, Wait, in_order,
                                      journal_for, names, note_failed_units, phase)
from update_agent.decide import kernel, kexec
from update_agent.errors import AgentError
from update_agent.node import facts as facts_mod, mounts
from update_agent.state import journal as journaling, statefile
from update_agent.state.states import Action, Result, StepState

LOG = logging.getLogger(__name__)

BOOTLOADER = "bootloader"


def current_boot_id(paths):
    try:
        with open(paths.boot_id_file, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


class WaitingForSlot(Wait):
    """No reboot slot free in the group now: try again later (not a failure)."""


class Unhealthy(AgentError):
    """The new kernel runs but the node fails its health checks."""

    result = Result.UNHEALTHY  # the journal's status and the history's result


# --- before the reboot: steps, functions of the run's Context ---------------
def take_slot(ctx):
    slots = ctx.slots
    if slots is None:
        return
    granted, why = slots.take()
    if not granted:
        raise WaitingForSlot("no reboot slot: %s" % why)
    # released under this id after the reboot: a node whose machine-id is made up
    # at each boot (empty in the image, read-only root) comes back as another id
    ctx.journal.took_slot(slots.node)
    LOG.info("reboot slot: %s", why)


def copy_fallback(ctx):
    """Copy the running build's vmlinuz and initrd under the fallback's name."""
    plan, root = ctx.plan, ctx.paths.root
    if ctx.journal.steps.get("sync", StepState.PENDING) != StepState.PENDING:
        # resumed after the sync began: those paths may hold the new build already
        LOG.warning("the sync has begun: the fallback copies %s are not made again",
                    ", ".join("/" + b for _, b in plan.fallback.copies))
        return
    for src, dst in plan.fallback.copies:
        try:
            statefile.copy_atomic(os.path.join(root, src), os.path.join(root, dst))
        except OSError as e:
            raise AgentError("could not copy the running build's /%s to /%s, the "
                             "fallback: %s" % (src, dst, e.strerror or e))
        LOG.info("kept the running build's /%s as /%s", src, dst)


def verified(ctx):
    # a sync whose verification failed is done again
    return ctx.journal.done("sync") and ctx.journal.done("verify")


def reboot(ctx):
    plan, j = ctx.plan, ctx.journal
    method = plan.reboot_method or "reboot"
    # the kexec --load command for method kexec (else None)
    load = (kexec.load_argv(ctx.facts.kexec[1], ctx.paths, plan.image_kernel, ctx.image_entries)
            if plan.reboot_method == "kexec" else None)
    if ctx.reboot is None:
        commands = ([load] if load else []) + [["systemctl", method]]
        j.note = ("--root is not /: did not run %s into kernel %s; the next run checks the "
                  "node as after that reboot"
                  % (" then ".join("`%s`" % " ".join(c) for c in commands), j.kernel))
        LOG.warning("%s", j.note)
        return
    ctx.status("rebooting into kernel %s" % j.kernel)
    j.boot_id = current_boot_id(ctx.paths)
    ctx.state.journal.save(j)
    ctx.reboot(method, load)


# --- after the reboot ----------------------------------------------------
def check_kernel(ctx):
    j, running = ctx.journal, os.uname().release
    if running != j.kernel:
        raise AgentError("the node came back on kernel %s, not the planned %s: the new "
                         "kernel did not boot (the boot loader falls back to the old one)"
                         % (running, j.kernel))
    if j.fallback and j.fallback == kernel.fallback_release(running):
        # the same name for both builds: the booted file tells them apart
        booted = facts_mod.boot_image(ctx.paths)
        if booted == "vmlinuz-" + j.fallback:
            raise AgentError("the node came back on kernel %s, the copy of the previous "
                             "build of %s, not the planned new build: it did not boot "
                             "(the boot loader falls back to the copy)" % (j.fallback, running))
        if not booted:
            LOG.warning("the boot loader did not say which file it booted (no BOOT_IMAGE= "
                        "in /proc/cmdline): kernel %s is taken for the new build by its "
                        "name", running)
    LOG.info("running the planned kernel %s", running)


def check_health(ctx):
    j = ctx.journal
    before = set(j.failed_units) if j.failed_units is not None else None
    problems = health.check(ctx.system, ctx.paths, ctx.config.health, ctx.env, before)
    if problems:
        raise Unhealthy("the node runs kernel %s but is unhealthy: %s; kernel %s stays the "
                        "boot default and the reboot slot stays held until the checks pass "
                        "(the next run checks again)"
                        % (j.kernel, "; ".join(problems), j.old_kernel or "the old one"))


def drop_old_kernel(ctx):
    """The new kernel is proven: the old kernel's files the image lacks can go."""
    j, image_entries = ctx.journal, ctx.image_entries or {}
    if not image_entries:
        LOG.warning("the image's manifest is not cached: keeping the old kernel's files %s",
                    ", ".join("/" + r for r in j.kept))
        return
    for rel in j.kept:
        if rel not in image_entries:
            sync.remove(ctx.paths.root, rel)
            LOG.info("removed the old kernel's /%s", rel)


def release(ctx):
    if ctx.slots is not None:
        ctx.slots.release()


def count_failure(ctx):
    if ctx.slots is not None:
        try:
            ctx.slots.failed()
        except AgentError as e:
            LOG.error("could not count the failure against the group: %s", e)


# the in-place steps they share, with the reboot path's skip rules: its
# pre-configure and verify are done once journaled, its sync once verified
BEFORE_REBOOT = [
    Step(journaling.SLOT_STEP, take_slot),
    dataclasses.replace(inplace.PRE_CONFIGURE, done_when=None),
    inplace.REMOUNT_RW,
    inplace.PIN,
    Step("fallback", copy_fallback, needs_rw=True),
    dataclasses.replace(inplace.SYNC, rerun=False, done_when=verified),
    dataclasses.replace(inplace.VERIFY, rerun=False),
    inplace.COMMIT,
    # boot the new kernel once
    Step(BOOTLOADER, phase(BOOTLOADER, UPDATE_AGENT_BOOT="once"), needs_rw=True),
    inplace.REMOUNT_RO,
    Step("reboot", reboot),
]
# health before the old kernel goes and the new one becomes the default: an unhealthy
# node keeps its fallback; the old kernel goes before boot-default, whose update-grub
# then drops its menu entries
AFTER_REBOOT = [
    Step(journaling.BOOT_CHECK_STEP, check_kernel),
    Step("remount-rw-after", remount.remount_rw, rerun=True),
    inplace.CONFIGURE,
    inplace.POST_CONFIGURE,
    inplace.MIGRATION,
    Step("health", check_health),
    Step("old-kernel", drop_old_kernel, needs_rw=True),
    Step("boot-default", phase(BOOTLOADER, UPDATE_AGENT_BOOT="default"), needs_rw=True),
    Step("remount-ro-after", remount.remount_ro_if_it_was, rerun=True),
    Step("release", release),
]
STEPS = names(BEFORE_REBOOT + AFTER_REBOOT)  # the journal's step names, in run order


def step_names(action):
    """The journal's step names of an update of this action, in run order."""
    return STEPS if action == Action.REBOOT else inplace.STEPS


def in_run_order(j):
    """j (or None) with its steps in run order, as a journal read from its file needs
    for Journal.stopped_at."""
    return in_order(j, step_names(j.action)) if j is not None else None


# --- the executor --------------------------------------------------------
class RebootExecutor:
    def __init__(self, system, paths, config, state, images, read_mounts=mounts.read,
                 sleep=time.sleep, should_stop=None, status=None, slots=None, reboot=None,
                 migrate=True):
        """slots: coordination.RebootSlots / fleetlock.Client, or None; reboot:
        callable(method, kexec load argv) that reboots this machine, or None."""
        self.context = Context(system, paths, config, state, images, read_mounts=read_mounts,
                               sleep=sleep, status=status or (lambda text: None),
                               slots=slots, reboot=reboot, migrate=migrate)
        self.runner = Runner(should_stop)

    @property
    def slots(self):
        return self.context.slots

    def remount_ro(self):
        remount.remount_ro(self.context)

    def start(self, plan, facts, image_tree, image_entries):
        """The steps up to the reboot. Raises StepFailed, Interrupted or WaitingForSlot."""
        ctx = dataclasses.replace(self.context, plan=plan, facts=facts, image_tree=image_tree,
                                  image_entries=image_entries)
        j = ctx.journal = journal_for(ctx, STEPS)
        j.steps = {s: j.steps.get(s, StepState.PENDING) for s in STEPS}
        fallback = plan.fallback.kernel or facts.release
        j.action, j.kernel, j.old_kernel = Action.REBOOT, plan.image_kernel, fallback
        j.fallback = fallback if fallback != facts.release else ""
        j.kept = list(plan.kept_kernel)
        note_failed_units(ctx, j)
        ctx.env = hooks.hook_env(ctx.paths, plan.image_id, j.previous_image_id, "reboot",
                                 {"UPDATE_AGENT_KERNEL": plan.image_kernel,
                                  # the fallback: the boot loader keeps it the default
                                  "UPDATE_AGENT_OLD_KERNEL": fallback})
        return self.runner.run(ctx, BEFORE_REBOOT, result=Result.REBOOTING)

    def finish(self, j, image_entries=None):
        """The checks and phases after the reboot; j is the journal that awaits them."""
        ctx = dataclasses.replace(self.context, journal=in_order(j, STEPS),
                                  image_entries=image_entries)
        if ctx.slots is not None and j.slot_node:
            ctx.slots.node = j.slot_node
        ctx.env = hooks.hook_env(ctx.paths, j.image_id, j.previous_image_id, "reboot",
                                 {"UPDATE_AGENT_KERNEL": j.kernel})
        unhealthy_before = j.failed_step == "health"  # counted against the group already
        try:
            return self.runner.run(ctx, AFTER_REBOOT)
        except StepFailed as e:
            if e.step == journaling.BOOT_CHECK_STEP:
                count_failure(ctx)
                release(ctx)
            elif e.step == "health" and not unhealthy_before:
                count_failure(ctx)
            raise
