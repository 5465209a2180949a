"""Pure: does the apply fit, in bytes and in inodes, on the root and in the state dir?

The root takes the change set's content and an inode for every added path and
for every replaced file whose old inode the pin step keeps alive (a process
still runs it). The state dir takes the apply's own files: the transfer list,
the pin targets, the change list kept beside the history, the journal and its
atomic rewrites. A node found short is refused before anything is written: a
sync that runs out half-way leaves new files over the old /etc/image_id.
"""

import dataclasses

# rsync's temporary, the atomic rewrites of the account files and /etc/image_id
ROOT_INODE_MARGIN = 64
# journal.json and its temporaries, history.jsonl, images.json, the account base
# files, transfer.list, the pin targets, the change list
STATE_INODES = 32
STATE_SLACK_BYTES = 1 << 20   # the journal, the history line, the account base files
PER_PATH_BYTES = 8            # a change list's quoting and separators per path


@dataclasses.dataclass(frozen=True)
class Room:
    """Free space of one filesystem; None where the filesystem does not say."""
    name: str                 # how a refusal names it: "the root /" or "the state dir ..."
    free_bytes: int = None
    free_inodes: int = None


@dataclasses.dataclass(frozen=True)
class Need:
    bytes: int = 0
    inodes: int = 0
    why_bytes: str = ""
    why_inodes: str = ""


def root_need(change_set, pinned, margin_bytes, fallback=(0, 0), kept=(0, 0)):
    """fallback: (bytes, files) of the copy of the running build that a same-name
    kernel rebuild keeps beside the new one until it has booted; kept: (bytes,
    files) of the replaced files a repository image keeps for its rollback."""
    copy_bytes, copies = fallback
    kept_bytes, kept_files = kept
    added = len(change_set.added)
    inodes = added + pinned + copies + kept_files + ROOT_INODE_MARGIN
    return Need(change_set.bytes + copy_bytes + kept_bytes + margin_bytes, inodes,
                "changes%s%s plus a %d byte margin"
                % (", the fallback kernel's copy of %d bytes" % copy_bytes if copies else "",
                   ", %d bytes of replaced files kept for a rollback" % kept_bytes
                   if kept_files else "", margin_bytes),
                "%d added paths, %d replaced files kept while in use, %s%sa margin of %d"
                % (added, pinned, "%d fallback kernel files, " % copies if copies else "",
                   "%d kept for a rollback, " % kept_files if kept_files else "",
                   ROOT_INODE_MARGIN))


def state_need(change_set, accounts, pinned_paths):
    """The state dir's share of an apply, from the paths it lists."""
    listed = change_set.transfer + change_set.changed + change_set.added + change_set.deleted
    names = sum(len(p.encode("utf-8", "surrogateescape")) + PER_PATH_BYTES for p in listed)
    names += sum(len(rel) + 32 for rel in pinned_paths) + sum(len(rel) + 8 for rel, _ in accounts)
    return Need(names + STATE_SLACK_BYTES, STATE_INODES,
                "the change lists of %d paths and a %d byte slack"
                % (len(change_set.transfer) + len(change_set.deleted), STATE_SLACK_BYTES),
                "the journal, the history and the change lists")


def _plus(a, b):
    return Need(a.bytes + b.bytes, a.inodes + b.inodes, "%s, and the state dir's %s"
                % (a.why_bytes, b.why_bytes), "%s, and the state dir's %s" % (a.why_inodes, b.why_inodes))


def shortfalls(room, need):
    """Refusal texts for each of bytes and inodes that room lacks."""
    out = []
    if room.free_bytes is not None and need.bytes > room.free_bytes:
        out.append("not enough free space on %s: need %d bytes (%s), have %d"
                   % (room.name, need.bytes, need.why_bytes, room.free_bytes))
    if room.free_inodes is not None and need.inodes > room.free_inodes:
        out.append("not enough free inodes on %s: need %d inodes (%s), have %d"
                   % (room.name, need.inodes, need.why_inodes, room.free_inodes))
    return out


def check(facts, change_set, accounts, restart_plan, margin_bytes, procs=(), fallback=(0, 0),
          kept=(0, 0)):
    """Refusals (empty: the apply fits). procs: the running processes, whose
    inodes the pin step keeps; fallback, kept: as root_need's."""
    in_use = set()
    for proc in procs:
        in_use |= proc.inodes
    pinned_paths = [rel for ino, rel in restart_plan.targets if ino in in_use]
    root = root_need(change_set, len(pinned_paths), margin_bytes, fallback, kept)
    state = state_need(change_set, accounts, pinned_paths)
    root_room = Room("the root %s" % facts.root, facts.free_bytes, facts.root_free_inodes)
    if facts.state_on_root_fs:
        return shortfalls(root_room, _plus(root, state))
    state_room = Room("the state dir %s (filesystem %s)" % (facts.state_dir, facts.state_fs or "?"),
                      facts.state_free_bytes, facts.state_free_inodes)
    return shortfalls(root_room, root) + shortfalls(state_room, state)
