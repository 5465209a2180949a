"""Pure: decide what to do, with every reason.

preflight() decides what can be decided without the image (noop, refusals);
decide() takes the manifests and decides the rest. Both are pure functions of
their arguments, so --dry-run prints exactly what apply would do.
"""

import dataclasses

from update_agent.decide import (
    accounts, capacity, changes as changeset, entries, kernel, kexec, restarts as restarting,
    rollback_keep
)
from update_agent.decide.actions import Action
from update_agent.decide.sides import PlanOptions

NOOP = Action.NOOP
IN_PLACE = Action.IN_PLACE
ROLLBACK = Action.ROLLBACK
REBOOT = Action.REBOOT
REFUSE = Action.REFUSE

SAMPLE = 20


@dataclasses.dataclass(frozen=True)
class Plan:
    action: Action
    reasons: tuple
    image_id: str
    current_image_id: str
    digest: str = ""
    running_kernel: str = ""
    image_kernel: str = ""
    changes: changeset.ChangeSet = None
    accounts: tuple = ()          # ((rel, merged_text), ...) for files that change
    resume: bool = False          # an unfinished update of this image is resumed
    root_was_ro: bool = False
    restarts: restarting.RestartPlan = restarting.RestartPlan()
    skipped_mounts: tuple = ()    # paths the image changes that are mount points on the node
    kept_kernel: tuple = ()       # reboot: the running kernel's files, kept until proven
    # reboot: what the boot loader falls back to, and the copies of the running
    # build made before the sync when the image rebuilds it under the same name
    fallback: kernel.Fallback = kernel.Fallback()
    reboot_method: str = ""       # reboot: "reboot" or "kexec" (kexec.decide)
    # a repository image: ((hex, node rel), ...) the pin step keeps for a rollback
    kept_for_rollback: tuple = ()

    def to_dict(self):
        ch = self.changes or changeset.ChangeSet()
        summary = ch.summary()
        summary["changed"] += len(self.accounts)
        summary["sample"] = {
            "changed": ["/" + p for p in ch.changed[:SAMPLE]] + ["/" + r for r, _ in self.accounts],
            "added": ["/" + p for p in ch.added[:SAMPLE]],
            "deleted": ["/" + p for p in ch.deleted[:SAMPLE]],
            "touched": ["/" + p for p in ch.touched[:SAMPLE]],
        }
        summary["kept"] = ["/" + p for p in ch.kept]
        return {
            "action": self.action,
            "reasons": list(self.reasons),
            "image_id": self.image_id,
            "current_image_id": self.current_image_id,
            "digest": self.digest,
            "kernel": {"running": self.running_kernel, "image": self.image_kernel},
            "reboot_method": self.reboot_method,
            "fallback": {"kernel": self.fallback.kernel,
                         "copies": [["/" + a, "/" + b] for a, b in self.fallback.copies]},
            "changes": summary,
            "resume": self.resume,
            "root_was_read_only": self.root_was_ro,
            "restarts": self.restarts.to_dict(),
            "skipped_mount_points": ["/" + p for p in self.skipped_mounts],
            "kept_for_rollback": len(self.kept_for_rollback),
        }


def _resume_reasons(desired, journal):
    if journal is None or not journal.unfinished:
        return False, []
    where = journal.failed_step or journal.stopped_at() or "start"
    if journal.image_id == desired.image_id:
        why = " (%s)" % journal.error if journal.error else ""
        return True, ["resuming the unfinished update to %s, which stopped at step %s%s"
                      % (journal.image_id, where, why)]
    return False, ["the unfinished update to %s (stopped at step %s) is superseded by %s"
                   % (journal.image_id, where, desired.image_id)]


def _not_rebooted(journal):
    """An unfinished reboot path that has not rebooted yet (None if there is none)."""
    if (journal is not None and journal.unfinished and journal.action == REBOOT
            and not journal.done("reboot")):
        return journal
    return None


def running_in_copy(facts, journal):
    """The running build is in its fallback copy, not /boot/vmlinuz-<R>: the node
    booted the copy, or an update made the copy and has not rebooted since (its
    sync may have put the image's build under the running name)."""
    if kernel.booted_fallback(facts.release, facts.boot_image):
        return True
    j = _not_rebooted(journal)
    return bool(j and j.done("fallback") and j.fallback == kernel.fallback_release(facts.release))


def root_was_ro(facts, journal):
    # After a crash the root may be left writable: the journal remembers how it was.
    if journal is not None and journal.unfinished:
        return journal.root_was_ro
    return facts.root_read_only


def preflight(desired, facts, journal, adopt=False, rejected=None):
    """A Plan if it can be decided without the image, else None.

    rejected: {image_id: {"why", ...}} images rolled back from, not applied again."""
    resume, reasons = _resume_reasons(desired, journal)
    base = dict(image_id=desired.image_id, current_image_id=facts.current_image_id,
                running_kernel=facts.release, resume=resume,
                root_was_ro=root_was_ro(facts, journal))
    unfinished = journal is not None and journal.unfinished
    if journal is not None and journal.checks_due_for(desired.image_id):
        return Plan(REBOOT, tuple(["the reboot into kernel %s for image %s is done: its checks "
                                   "are due (running %s)" % (journal.kernel, journal.image_id,
                                                             facts.release)]),
                    **dict(base, image_id=journal.image_id, image_kernel=journal.kernel, resume=True))
    if (journal is not None and journal.failed_boot_check
            and journal.image_id == desired.image_id):
        return Plan(REFUSE, tuple(["the last reboot into kernel %s for image %s came back on %s; "
                                   "not trying again on its own: check the boot, then run "
                                   "`update-agent reboot`, or publish another image"
                                   % (journal.kernel, journal.image_id, journal.old_kernel)]),
                    **base)
    if not unfinished and facts.current_image_id == desired.image_id:
        return Plan(NOOP, tuple(["image_id %s is already current" % desired.image_id]), **base)
    bad = (rejected or {}).get(desired.image_id)
    if bad:  # even an unfinished update of it: --force is the way back
        return Plan(REFUSE, tuple(["image %s was rolled back from (%s); it is not applied again: "
                                   "publish another image, or run `update-agent apply --force`"
                                   % (desired.image_id, bad.get("why", "?"))]), **base)
    refusals = []
    if not facts.current_image_id and not adopt:
        refusals.append("the root has no /etc/image_id, so it was not deployed from an image; "
                        "pass --adopt to take it over")
    if facts.root_errors:
        refusals.append("the root filesystem has recorded %d errors (with errors=remount-ro the "
                        "kernel makes it read-only): check it with fsck before updating"
                        % facts.root_errors)
    if facts.root_read_only and not facts.root_is_mount_point:
        refusals.append("the root %s is read-only but not a mount point, so it cannot be "
                        "remounted" % facts.root)
    if facts.root_read_only and facts.state_on_root_fs:
        refusals.append("the state dir %s is on the read-only root filesystem; put state_dir "
                        "on a writable filesystem" % facts.state_dir)
    elif facts.state_read_only:
        refusals.append("the state dir %s is on a read-only filesystem" % facts.state_dir)
    if refusals:
        return Plan(REFUSE, tuple(reasons + refusals), **base)
    return None


def policy(restart):
    """The restart policy from the config's [restart] section."""
    return restarting.Policy(mode=restart.restart_mode,
                             never_restart=tuple(restart.never_restart) + tuple(restart.never_restart_extra),
                             leave_to_hooks=tuple(restart.leave_to_hooks))


def _kept_kinds(protected, node_entries, preserved, excluded):
    """({rel: kind} of the paths the node keeps as its own and that keep their type,
    the account files merged rather than copied).

    protected: {rel: kind} (or just the paths) the walk left out."""
    kinds = dict(protected) if isinstance(protected, dict) else dict.fromkeys(protected)
    # the preserved paths: not the mount points, the state dir or the pin dir, the
    # agent's own places, which may well be a symlink on the node
    kept = {rel: kind for rel, kind in kinds.items() if rel in preserved}
    merged = tuple(rel for rel in accounts.FILES if not excluded.covers(rel))
    kept.update((rel, node_entries[rel].kind) for rel in merged if rel in node_entries)
    return kept, merged


def _absent_preserved(image, kept, preserved):
    """Preserved paths the image has and the node lacks (outermost only): left absent."""
    out = [rel for rel in image if rel in preserved and rel not in kept
           and not any(a in preserved for a in changeset.ancestors(rel))]
    return sorted(out)


def decide(desired, facts, journal, config, image, node, options=PlanOptions()):
    """The full plan, from the node's and the image's manifests.

    image: an ImageSide; node: a NodeSide; options: PlanOptions (sides.py says
    what each holds).
    """
    image_entries, node_entries = image.entries, node.entries
    protected = node.protected
    early = preflight(desired, facts, journal, options.adopt, options.rejected)
    if early is not None:
        return early
    resume, reasons = _resume_reasons(desired, journal)
    # the kernel is judged on the whole image: /boot may be a mount point on the node
    image_k = kernel.image_kernel(image_entries)
    running = kernel.running_kernel(facts.release, node_entries, node.running_vmlinuz)
    # mount points the image would change and nothing else keeps: worth a note
    preserved = entries.Excluder(config.agent.preserved)
    skipped = tuple(sorted(r for r in set(facts.mount_points) & set(image_entries)
                           if not preserved.covers(r)))
    full_image = image_entries
    excluded = entries.Excluder(facts.excluded)
    image_entries = excluded.filter(image_entries)
    same_kernel, kernel_reasons = kernel.compare(running, image_k)
    fallback = kernel.fallback(running, image_k, node_entries, running_in_copy(facts, journal))
    pending = _not_rebooted(journal)
    if same_kernel and pending and pending.image_id == desired.image_id:
        # resumed after its sync: the node's files are the image's now, the reboot is still due
        same_kernel = False
        kernel_reasons = ["the unfinished reboot into kernel %s for image %s has not rebooted "
                          "yet" % (pending.kernel, pending.image_id)]
    if protected is None:
        protected = [p.strip("/") for p in facts.excluded if not any(c in p for c in "*?[")]
    kept, merged_files = _kept_kinds(protected, node_entries, preserved, excluded)
    # a reboot keeps the running kernel's files until the new kernel has booted; a
    # copy the node booted from is kept whatever the plan (GRUB's default names it)
    keep = (() if same_kernel else tuple(kernel.kernel_files(node_entries, facts.release)))
    keep += tuple(p for p in fallback.kept if p in node_entries or not same_kernel)
    # the directories above the account files are guarded like those above preserved paths
    change_set = changeset.diff(node_entries, image_entries,
                                protected=set(protected) | (set(kept) & set(node_entries)),
                                skip=accounts.FILES, keep=keep)
    refusals = changeset.too_long(full_image)
    refusals += changeset.type_conflicts(kept, full_image, merged_files)
    refusals += change_set.conflicts
    merged = []
    for rel, texts in sorted(node.accounts.items()):
        node_text, image_text = texts[0], texts[1]
        base_text = texts[2] if len(texts) > 2 else None
        try:
            text = accounts.merge(rel, node_text, image_text, base_text)
        except accounts.AccountClash as e:
            refusals.append("accounts cannot be merged: %s" % e)
            continue
        if text != node_text:
            merged.append((rel, text))
    restart_plan = restarting.decide(node.procs, change_set,
                                     restarting.targets_of(change_set, node.sigs or {}),
                                     policy(config.restart), node.imports, node.agent_pid)
    plan = dict(image_id=desired.image_id, current_image_id=facts.current_image_id,
                digest=image.digest, running_kernel=facts.release, image_kernel=image_k.version,
                changes=change_set, accounts=tuple(merged), resume=resume,
                root_was_ro=root_was_ro(facts, journal), restarts=restart_plan,
                skipped_mounts=skipped, kept_kernel=tuple(keep), fallback=fallback)
    if image.keeps_replaced:
        plan["kept_for_rollback"] = rollback_keep.replaced(change_set, node_entries)
    reasons = reasons + ["image_id %s differs from current %s"
                         % (desired.image_id, facts.current_image_id or "(none)")]
    if not image_k.version:
        return Plan(REFUSE, tuple(reasons + kernel_reasons), **plan)
    copies = (sum(node_entries[src].size for src, _ in fallback.copies), len(fallback.copies))
    refusals += capacity.check(facts, change_set, merged, restart_plan, config.agent.free_space_margin,
                               node.procs, copies,
                               rollback_keep.room(plan.get("kept_for_rollback", ()), node_entries))
    if refusals:
        return Plan(REFUSE, tuple(reasons + refusals), **plan)
    if change_set.kept:
        reasons.append("%d directories the image drops are kept: they hold preserved paths "
                       "or mount points" % len(change_set.kept))
    absent = _absent_preserved(full_image, kept, preserved)
    if absent:
        reasons.append("%d preserved paths the image has are absent on the node and are not "
                       "created from the image (they are the node's own): %s"
                       % (len(absent), ", ".join(entries.show(r) for r in absent[:5])))
    if not same_kernel:
        if keep:
            kernel_reasons.append("the running kernel's files are kept until the new kernel "
                                  "has booted: %s" % ", ".join("/" + k for k in keep))
        if fallback.copies:
            kernel_reasons.append(
                "the image rebuilds kernel %s under the same name: before the sync its running "
                "build is copied as %s, the boot loader's fallback (kernel %s) until the new "
                "build has booted; /lib/modules/%s becomes the new build's (a same-name build "
                "keeps the ABI; the copy's initramfs has its early-boot modules)"
                % (facts.release, ", ".join("/" + b for _, b in fallback.copies),
                   fallback.kernel, facts.release))
        method, why = kexec.decide(config.agent.reboot_method, image_k.version, image_entries, *facts.kexec)
        if why:
            kernel_reasons.append(why)
        return Plan(REBOOT, tuple(reasons + kernel_reasons), **dict(plan, reboot_method=method))
    s = change_set.summary()
    if skipped:
        reasons.append("%d paths the image has are mount points on the node and are left "
                       "alone: %s" % (len(skipped), ", ".join("/" + p for p in skipped[:5])))
    rp = restart_plan
    if rp.affected:
        reasons.append("processes run code the sync replaces: restart %s%s%s%s%s" % (
            ", ".join(rp.restart) or "no unit",
            "; daemon-reexec (PID 1)" if rp.daemon_reexec else "",
            "; not restarted by policy: %s" % ", ".join(u for u, _ in rp.excluded) if rp.excluded else "",
            "; left to hooks: %s" % ", ".join(rp.hooks) if rp.hooks else "",
            "; outside any service: %s" % ", ".join("%s[%d]" % (n, p) for p, n, _ in rp.outside)
            if rp.outside else ""))
    if rp.daemon_reload:
        reasons.append("unit files change: systemctl daemon-reload")
    reasons.append("%d changed (%d of them account files, merged), %d added, %d deleted, "
                   "%d bytes to write; %d touched (the image's mtime, no bytes)"
                   % (s["changed"] + len(merged), len(merged), s["added"], s["deleted"],
                      s["bytes"], s["touched"]))
    if options.rollback:
        reasons.insert(0, "rolling back to the previous image %s" % desired.image_id)
    return Plan(ROLLBACK if options.rollback else IN_PLACE, tuple(reasons + kernel_reasons), **plan)
