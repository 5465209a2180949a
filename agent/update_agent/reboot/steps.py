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

import logging
import os

from update_agent.apply import health, hooks, live, sync
from update_agent.apply.inplace import Executor, StepFailed
from update_agent.decide import kernel, kexec
from update_agent.errors import AgentError
from update_agent.node import facts as facts_mod
from update_agent.state import journal as journaling, statefile

LOG = logging.getLogger(__name__)

BOOTLOADER = "bootloader"


def current_boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


class WaitingForSlot(AgentError):
    """No reboot slot free in the group now: try again later (not a failure)."""


class Unhealthy(AgentError):
    """The new kernel runs but the node fails its health checks."""

    result = "unhealthy"  # the journal's status and the history's result


class RebootExecutor(Executor):
    def __init__(self, *args, slots=None, reboot=None, **kw):
        super().__init__(*args, **kw)
        self.slots = slots          # coordination.RebootSlots / fleetlock.Client, or None
        self.reboot = reboot        # callable(method, kexec load argv) that reboots this machine, or None

    # --- before the reboot ------------------------------------------------
    def start(self, plan, facts, image_tree, image_entries):
        j = self._journal_for(plan, facts)
        j.steps = {s: j.steps.get(s, "pending") for s in journaling.REBOOT_STEPS}
        fallback = plan.fallback.kernel or facts.release
        j.action, j.kernel, j.old_kernel = "reboot", plan.image_kernel, fallback
        j.fallback = fallback if fallback != facts.release else ""
        j.kept = list(plan.kept_kernel)
        self._note_failed_units(j)
        self._plan = plan
        env = hooks.hook_env(self.paths, plan.image_id, j.previous_image_id, "reboot",
                             {"UPDATE_AGENT_KERNEL": plan.image_kernel,
                              # the fallback: the boot loader keeps it the default
                              "UPDATE_AGENT_OLD_KERNEL": fallback})
        actions = {
            "slot": lambda: self._take_slot(j),
            "pre-configure": lambda: self._phase(hooks.PRE_CONFIGURE, env),
            "remount-rw": self.remount_rw,
            # replaced inodes still in use, linked: else remount,ro before the reboot is refused
            "pin": lambda: live.pin(self.paths.root, plan.restarts, self.paths.work_dir),
            "fallback": lambda: self._copy_fallback(j, plan),
            "sync": lambda: self._sync(plan, facts, image_tree, image_entries),
            "verify": lambda: self._verify(plan, facts, image_entries),
            "commit": lambda: self.commit(plan, j, image_tree),
            "bootloader": lambda: self._phase(BOOTLOADER, dict(env, UPDATE_AGENT_BOOT="once")),
            "remount-ro": self.remount_ro if j.root_was_ro else (lambda: None),
            "reboot": lambda: self._reboot(j, plan.reboot_method or "reboot",
                                           kexec.load_argv(facts.kexec[1], self.paths, plan.image_kernel,
                                                           image_entries)
                                           if plan.reboot_method == "kexec" else None),
        }
        return self._run(j, journaling.BEFORE_REBOOT, actions, env)

    def _copy_fallback(self, j, plan):
        """Copy the running build's vmlinuz and initrd under the fallback's name."""
        if j.steps.get("sync", "pending") != "pending":
            # resumed after the sync began: those paths may hold the new build already
            LOG.warning("the sync has begun: the fallback copies %s are not made again",
                        ", ".join("/" + b for _, b in plan.fallback.copies))
            return
        for src, dst in plan.fallback.copies:
            try:
                statefile.copy_atomic(os.path.join(self.paths.root, src),
                                      os.path.join(self.paths.root, dst))
            except OSError as e:
                raise AgentError("could not copy the running build's /%s to /%s, the "
                                 "fallback: %s" % (src, dst, e.strerror or e))
            LOG.info("kept the running build's /%s as /%s", src, dst)

    def _take_slot(self, j):
        if self.slots is None:
            return
        granted, why = self.slots.take()
        if not granted:
            raise WaitingForSlot("no reboot slot: %s" % why)
        # released under this id after the reboot: a node whose machine-id is made up
        # at each boot (empty in the image, read-only root) comes back as another id
        j.slot_node = self.slots.node
        LOG.info("reboot slot: %s", why)

    def _reboot(self, j, method, load):
        """load: the kexec --load command for method kexec (else None)."""
        if self.reboot is None:
            commands = ([load] if load else []) + [["systemctl", method]]
            j.note = ("--root is not /: did not run %s into kernel %s; the next run checks the "
                      "node as after that reboot"
                      % (" then ".join("`%s`" % " ".join(c) for c in commands), j.kernel))
            LOG.warning("%s", j.note)
            return
        self.status("rebooting into kernel %s" % j.kernel)
        j.boot_id = current_boot_id()
        self.state.save_journal(j)
        self.reboot(method, load)

    # --- after the reboot -------------------------------------------------
    def finish(self, j, image_entries=None):
        """The checks and phases after the reboot; j is the journal that awaits them."""
        if self.slots is not None and j.slot_node:
            self.slots.node = j.slot_node
        env = hooks.hook_env(self.paths, j.image_id, j.previous_image_id, "reboot",
                             {"UPDATE_AGENT_KERNEL": j.kernel})
        running = os.uname().release
        unhealthy_before = j.failed_step == "health"  # counted against the group already
        actions = {
            "boot-check": lambda: self._check_kernel(j, running),
            "remount-rw-after": self.remount_rw,
            "configure": lambda: self._phase(hooks.CONFIGURE, env),
            "post-configure": lambda: self._phase(hooks.POST_CONFIGURE, env),
            "migration": lambda: self._phase(hooks.MIGRATION, env),
            "health": lambda: self._check_health(j, env),
            "boot-default": lambda: self._phase(BOOTLOADER, dict(env, UPDATE_AGENT_BOOT="default")),
            "old-kernel": lambda: self._drop_old_kernel(j, image_entries or {}),
            "remount-ro-after": self.remount_ro if j.root_was_ro else (lambda: None),
            "release": self._release,
        }
        try:
            record = self._run(j, journaling.AFTER_REBOOT, actions, env)
        except StepFailed as e:
            if e.step == "boot-check":
                self._count_failure()
                self._release()
            elif e.step == "health" and not unhealthy_before:
                self._count_failure()
            raise
        return record

    def _check_kernel(self, j, running):
        if running != j.kernel:
            raise AgentError("the node came back on kernel %s, not the planned %s: the new "
                             "kernel did not boot (the boot loader falls back to the old one)"
                             % (running, j.kernel))
        if j.fallback and j.fallback == kernel.fallback_release(running):
            # the same name for both builds: the booted file tells them apart
            booted = facts_mod.boot_image(self.paths)
            if booted == "vmlinuz-" + j.fallback:
                raise AgentError("the node came back on kernel %s, the copy of the previous "
                                 "build of %s, not the planned new build: it did not boot "
                                 "(the boot loader falls back to the copy)" % (j.fallback, running))
            if not booted:
                LOG.warning("the boot loader did not say which file it booted (no BOOT_IMAGE= "
                            "in /proc/cmdline): kernel %s is taken for the new build by its "
                            "name", running)
        LOG.info("running the planned kernel %s", running)

    def _check_health(self, j, env):
        before = set(j.failed_units) if j.failed_units is not None else None
        problems = health.check(self.system, self.paths, self.config, env, before)
        if problems:
            raise Unhealthy("the node runs kernel %s but is unhealthy: %s; kernel %s stays the "
                            "boot default and the reboot slot stays held until the checks pass "
                            "(the next run checks again)"
                            % (j.kernel, "; ".join(problems), j.old_kernel or "the old one"))

    def _drop_old_kernel(self, j, image_entries):
        """The new kernel is proven: the old kernel's files the image lacks can go."""
        if not image_entries:
            LOG.warning("the image's manifest is not cached: keeping the old kernel's files %s",
                        ", ".join("/" + r for r in j.kept))
            return
        for rel in j.kept:
            if rel not in image_entries:
                sync.remove(self.paths.root, rel)
                LOG.info("removed the old kernel's /%s", rel)

    def _release(self):
        if self.slots is not None:
            self.slots.release()

    def _count_failure(self):
        if self.slots is not None:
            try:
                self.slots.failed()
            except AgentError as e:
                LOG.error("could not count the failure against the group: %s", e)

    # --- shared -----------------------------------------------------------
    def _run(self, j, steps, actions, env):
        j.status, j.failed_step, j.error = "running", "", ""
        self.state.save_journal(j)
        remounts = ("remount-rw", "remount-ro", "remount-rw-after", "remount-ro-after", "pin")
        try:
            self.run_steps(j, steps, actions, env,
                           lambda step: j.done(step) and step not in remounts
                           # a sync whose verification failed is done again
                           and not (step == "sync" and not j.done("verify")))
        except WaitingForSlot:
            j.steps["slot"] = "pending"
            j.status = "waiting"
            self.state.save_journal(j)
            raise
        if steps[-1] == "release":
            j.status = "done"
        self.state.save_journal(j)
        record = self._record(j, "success" if j.status == "done" else "rebooting", j.note)
        self.state.append_history(record)
        if j.status == "done":
            self.images.retain([j.digest, j.previous_digest])
        return record

    def _waiting(self, error):
        return isinstance(error, WaitingForSlot)
