"""Pure: the change set between the node's manifest and the image's.

The plan, --dry-run and the apply all use this one function, so what is
predicted is exactly what is synced.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class ChangeSet:
    changed: tuple = ()
    added: tuple = ()
    deleted: tuple = ()       # every node path that goes away
    deleted_top: tuple = ()   # the topmost of those: what is removed
    transfer: tuple = ()      # what rsync is given: changed and added paths
    bytes: int = 0            # content to write
    kept: tuple = ()          # node-only dirs kept because they hold protected paths
    conflicts: tuple = ()     # reasons the image cannot be applied

    @property
    def empty(self):
        return not (self.changed or self.added or self.deleted)

    def summary(self):
        return {"changed": len(self.changed), "added": len(self.added),
                "deleted": len(self.deleted), "bytes": self.bytes}


def ancestors(rel):
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _differs(a, b):
    # mtime is not compared (reproducible builds clamp it); content, type,
    # ownership, mode and xattrs are.
    return (a.kind != b.kind or a.mode != b.mode or a.uid != b.uid or a.gid != b.gid
            or a.digest != b.digest or a.xattrs != b.xattrs
            or (a.kind == "f" and a.size != b.size))


def diff(node, image, protected=(), skip=(), keep=()):
    """node, image: {rel: Entry}; protected: node paths that must survive
    (preserved paths and mount points present on the node); skip: paths
    handled elsewhere (the account files); keep: node paths (and trees) not
    deleted although the image lacks them (the running kernel, until the new
    one has booted)."""
    skip = set(skip)
    keep = tuple(keep)
    guarded = set()
    for rel in protected:
        guarded.update(ancestors(rel))
    changed, added, deleted, kept, conflicts = [], [], [], [], []
    for rel, new in image.items():
        if rel in skip:
            continue
        old = node.get(rel)
        if old is None:
            added.append(rel)
        elif _differs(old, new):
            if rel in guarded and new.kind != "d":
                conflicts.append("image replaces directory /%s, which holds preserved paths "
                                 "or mount points, with a %s" % (rel, _KIND_NAMES.get(new.kind, new.kind)))
                continue
            changed.append(rel)
    for rel in node:
        if rel not in image and rel not in skip:
            if keep and any(rel == k or rel.startswith(k + "/") for k in keep):
                continue
            if rel in guarded:
                kept.append(rel)
            else:
                deleted.append(rel)
    deleted_set = set(deleted)
    top_deleted = [r for r in deleted if not any(a in deleted_set for a in ancestors(r))]

    # hard links are recreated only if every member of the group is transferred
    transfer = set(changed) | set(added)
    groups = {}
    for rel, e in image.items():
        if e.link:
            groups.setdefault(e.link, []).append(rel)
    for members in groups.values():
        if transfer.intersection(members):
            transfer.update(m for m in members if m not in skip)
    nbytes = sum(image[r].size for r in transfer if image[r].kind == "f")
    return ChangeSet(
        changed=tuple(sorted(changed)), added=tuple(sorted(added)),
        deleted=tuple(sorted(deleted)),
        deleted_top=tuple(sorted(top_deleted)),
        transfer=tuple(sorted(transfer)),
        bytes=nbytes, kept=tuple(sorted(kept)), conflicts=tuple(conflicts))


_KIND_NAMES = {"f": "file", "d": "directory", "l": "symlink", "c": "character device",
               "b": "block device", "p": "fifo", "s": "socket"}
