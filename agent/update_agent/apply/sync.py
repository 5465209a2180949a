"""Sync the image over the root: exactly the plan's change set.

rsync is given the list of changed and added paths (--files-from) rather than
the whole tree: the change set is content-exact (from manifests), so -I makes
rsync rewrite files whose size and mtime did not change, and nothing else is
walked. rsync writes each file as a temporary and renames it, so running
programs keep their old inode. Deletions come last (as in swupd), done here
through directory file descriptors opened with O_NOFOLLOW, so no symlink on
the node, old or new, can redirect them. Last, the image's mtimes: on the paths
whose content was already the image's (the plan's touched), and on every
directory the sync wrote into, so that tools trusting mtimes (Python's caches,
make, rsync's quick check) see the image.
"""

import errno
import logging
import os
import shutil
import stat

from update_agent.decide import accounts, changes
from update_agent.errors import AgentError, CommandFailed
from update_agent.node import manifest
from update_agent.state import statefile

LOG = logging.getLogger(__name__)

# --force: a directory the image turns into a file or link is removed first
RSYNC_BASE = ("-aHAX", "--numeric-ids", "--one-file-system", "--ignore-times",
              "--from0", "--force")


def rsync_argv(rsync, list_file, excluded, image_tree, root):
    argv = [rsync, *RSYNC_BASE, "--files-from=" + list_file]
    # Belt and braces: the list never names these, the filter refuses them anyway.
    # A listed path is matched on its own, not through its parents: "/p/**" keeps
    # out what is below an excluded directory (a volume mounted since the plan).
    for pattern in excluded:
        argv += ["--exclude=/" + pattern.strip("/"), "--exclude=/" + pattern.strip("/") + "/**"]
    # the account files are merged, never copied: nor is anything an image puts below one
    for rel in accounts.FILES:
        argv += ["--exclude=/" + rel, "--exclude=/" + rel + "/**"]
    argv += [image_tree.rstrip("/") + "/", root.rstrip("/") + "/"]
    return argv


def first_error(stderr):
    """rsync's first real complaint (ENOSPC, EROFS, ...), not its closing summary."""
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    causes = [ln for ln in lines if ln.startswith("rsync:") and not ln.startswith("rsync error:")]
    line = (causes or lines or ["no error output"])[0]
    return line if len(line) <= 300 else line[:300] + "..."


def list_entry(rel):
    """rel as a --files-from line: rsync drops lines that begin with '#' or ';' as
    comments, even with --from0, so such a name is given as ./#name."""
    return ("./" + rel) if rel[:1] in ("#", ";") else rel


def write_list(path, rels):
    with open(path, "wb") as f:
        for rel in rels:
            f.write(os.fsencode(list_entry(rel)) + b"\0")


def _open_dir(root, parts):
    """A descriptor of root/parts..., never following a symlink; None if one of them
    is gone or is not a directory."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for comp in parts:
        try:
            nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except OSError as e:
            os.close(fd)
            if isinstance(e, (FileNotFoundError, NotADirectoryError)) or e.errno == errno.ELOOP:
                return None
            raise
        os.close(fd)
        fd = nfd
    return fd


def remove(root, rel):
    """Delete root/rel (recursively), never following a symlink on the way."""
    parts = rel.split("/")
    fd = _open_dir(root, parts[:-1])
    if fd is None:
        return False  # the parent is gone or is no longer a directory
    try:
        try:
            st = os.lstat(parts[-1], dir_fd=fd)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(parts[-1], dir_fd=fd)
        else:
            os.unlink(parts[-1], dir_fd=fd)
        return True
    finally:
        os.close(fd)


def mtime_targets(plan, image_entries):
    """{rel: mtime_ns} the sync gives the node after everything else: the touched
    paths, and the image's directories it wrote into ("" is the root), whose mtimes
    each write, merge and deletion moved."""
    ch = plan.changes
    # the root too: the image filesystem's root mtime (a pin dir made in it moves it)
    out = {"": None}
    out.update((rel, image_entries[rel].mtime) for rel in ch.touched if rel in image_entries)
    written = list(ch.transfer) + list(ch.deleted_top) + [rel for rel, _ in plan.accounts]
    for rel in written + list(ch.touched):
        for d in [rel] + changes.ancestors(rel)[-1:]:
            e = image_entries.get(d)
            if e is not None and e.kind == "d":
                out[d] = e.mtime
    return out


def set_mtimes(root, targets, image_tree, left_alone):
    """Set each path's mtime (its atime kept), never following a symlink, a parent
    directory opened once for all its entries."""
    by_parent = {}
    for rel, mtime in targets.items():
        if rel and left_alone.covers(rel):
            continue
        if rel == "":
            try:
                mtime = os.lstat(image_tree).st_mtime_ns
            except FileNotFoundError:
                continue
        parent, _, name = rel.rpartition("/")
        by_parent.setdefault(parent, []).append((name, mtime))
    done = 0
    for parent, items in sorted(by_parent.items()):
        fd = _open_dir(root, parent.split("/") if parent else [])
        if fd is None:
            continue
        try:
            for name, mtime in items:
                done += _utime(fd, name, mtime)
        finally:
            os.close(fd)
    return done


def _utime(fd, name, mtime):
    try:
        if name == "":
            st = os.fstat(fd)
            os.utime(fd, ns=(st.st_atime_ns, mtime))
        else:
            st = os.lstat(name, dir_fd=fd)
            if st.st_mtime_ns != mtime:
                os.utime(name, ns=(st.st_atime_ns, mtime), dir_fd=fd, follow_symlinks=False)
        return 1
    except FileNotFoundError:
        return 0


def _xattrs(path):
    """The image file's extended attributes (SELinux label, ACLs), to carry over."""
    try:
        return [(n, os.getxattr(path, n, follow_symlinks=False))
                for n in os.listxattr(path, follow_symlinks=False)]
    except OSError:
        return []


def sync(system, plan, image_tree, image_entries, root, excluded, work_dir, status=None):
    os.makedirs(work_dir, exist_ok=True)
    list_file = os.path.join(work_dir, "transfer.list")
    transfer = plan.changes.transfer
    write_list(list_file, transfer)
    if transfer:
        argv = rsync_argv(system.which("rsync"), list_file, excluded, image_tree, root)
        argv.insert(-2, "--out-format=%n")  # one line per path done: the progress
        done = [0]

        def progress(_line):
            done[0] += 1
            if status and (done[0] % 200 == 0 or done[0] == len(transfer)):
                status("syncing: %d/%d files" % (done[0], len(transfer)))
        try:
            system.stream(argv, progress)
        except CommandFailed as e:
            raise AgentError("rsync of %d paths onto %s failed (exit %s): %s"
                             % (len(transfer), root, e.returncode, first_error(e.stderr)))
    # rsync's --exclude keeps the transfer out of them; the rest is done here
    left_alone = manifest.Excluder(excluded)
    for rel, text in plan.accounts:
        if left_alone.covers(rel):
            continue
        e = image_entries[rel]
        statefile.write_atomic(os.path.join(root, rel), text.encode("utf-8", "surrogateescape"),
                               mode=e.mode, uid=e.uid, gid=e.gid,
                               xattrs=_xattrs(os.path.join(image_tree, rel)))
    # the directories holding one, as changes.diff guards them (a mount made since the
    # plan is not in its guard: deleting around it would empty the volume)
    holding = {a: p for p in sorted(left_alone.exact) for a in changes.ancestors(p)}
    for rel in plan.changes.deleted_top:
        if rel in holding:
            LOG.warning("/%s is not deleted: /%s below it is left alone", rel, holding[rel])
        elif not left_alone.covers(rel):
            remove(root, rel)
    # last: every write above moved the mtime of the directory it was in
    touched = set_mtimes(root, mtime_targets(plan, image_entries), image_tree, left_alone)
    # on disk before the step is journalled done, and before /etc/image_id names the image
    system.run([system.which("sync"), "--file-system", root])
    LOG.info("synced %d paths, merged %d account files, deleted %d paths and set %d mtimes "
             "on %s", len(transfer), len(plan.accounts), len(plan.changes.deleted_top),
             touched, root)
