"""Sync the image over the root: exactly the plan's change set, through rsync.

rsync is given the list of paths (--files-from) rather than the whole tree:
the change set is content-exact (from manifests), so -I makes rsync rewrite
files whose size and mtime did not change, and nothing else is walked.
Topmost deleted paths are deleted with --delete-missing-args. rsync writes each
file as a temporary and renames it, so running programs keep their old inode.
"""

import logging
import os

from update_agent import accounts, statefile
from update_agent.errors import AgentError, CommandFailed

LOG = logging.getLogger(__name__)

RSYNC_BASE = ("-aHAX", "--numeric-ids", "--one-file-system", "--ignore-times",
              "--from0", "--delete-missing-args", "--force")


def rsync_argv(rsync, list_file, excluded, image_tree, root):
    argv = [rsync, *RSYNC_BASE, "--files-from=" + list_file]
    # Belt and braces: the list never names these, the filter refuses them anyway.
    for pattern in list(excluded) + ["/" + rel for rel in accounts.FILES]:
        argv.append("--exclude=/" + pattern.strip("/"))
    argv += [image_tree.rstrip("/") + "/", root.rstrip("/") + "/"]
    return argv


def write_list(path, rels):
    with open(path, "wb") as f:
        for rel in rels:
            f.write(os.fsencode(rel) + b"\0")


def sync(system, plan, image_tree, image_entries, root, excluded, work_dir):
    os.makedirs(work_dir, exist_ok=True)
    list_file = os.path.join(work_dir, "transfer.list")
    write_list(list_file, plan.changes.transfer)
    if plan.changes.transfer:
        argv = rsync_argv(system.which("rsync"), list_file, excluded, image_tree, root)
        try:
            system.run(argv)
        except CommandFailed as e:
            raise AgentError("rsync of %d paths onto %s failed (exit %s): %s"
                             % (len(plan.changes.transfer), root, e.returncode,
                                e.stderr.strip().splitlines()[-1] if e.stderr.strip() else ""))
    for rel, text in plan.accounts:
        e = image_entries[rel]
        statefile.write_atomic(os.path.join(root, rel), text.encode("utf-8", "surrogateescape"),
                               mode=e.mode, uid=e.uid, gid=e.gid)
    LOG.info("synced %d paths and %d account files onto %s",
             len(plan.changes.transfer), len(plan.accounts), root)
