"""Sync the image over the root: exactly the plan's change set.

rsync is given the list of changed and added paths (--files-from) rather than
the whole tree: the change set is content-exact (from manifests), so -I makes
rsync rewrite files whose size and mtime did not change, and nothing else is
walked. rsync writes each file as a temporary and renames it, so running
programs keep their old inode. Deletions come last (as in swupd), done here
through directory file descriptors opened with O_NOFOLLOW, so no symlink on
the node, old or new, can redirect them.
"""

import errno
import logging
import os
import shutil
import stat

from update_agent import accounts, changes, manifest, statefile
from update_agent.errors import AgentError, CommandFailed

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
    argv += ["--exclude=/" + rel for rel in accounts.FILES]
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


def remove(root, rel):
    """Delete root/rel (recursively), never following a symlink on the way."""
    parts = rel.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for comp in parts[:-1]:
            try:
                nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except (FileNotFoundError, NotADirectoryError, OSError) as e:
                if isinstance(e, (FileNotFoundError, NotADirectoryError)) or e.errno == errno.ELOOP:
                    return False  # the parent is gone or is no longer a directory
                raise
            os.close(fd)
            fd = nfd
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
    # on disk before the step is journalled done, and before /etc/image_id names the image
    system.run([system.which("sync"), "--file-system", root])
    LOG.info("synced %d paths, merged %d account files and deleted %d paths on %s",
             len(transfer), len(plan.accounts), len(plan.changes.deleted_top), root)
