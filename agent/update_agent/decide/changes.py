"""Pure: the change set between the node's manifest and the image's.

The plan, --dry-run and the apply all use this one function, so what is
predicted is exactly what is synced.
"""

import dataclasses

from update_agent.decide.entries import NAME_MAX, PATH_MAX, show


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
    touched: tuple = ()       # content-identical paths given the image's mtime: no bytes

    @property
    def empty(self):
        # touched paths aside: giving a file its mtime needs no quiet services
        return not (self.changed or self.added or self.deleted)

    def summary(self):
        return {"changed": len(self.changed), "added": len(self.added),
                "deleted": len(self.deleted), "touched": len(self.touched),
                "bytes": self.bytes}


def ancestors(rel):
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _differs(a, b):
    # mtime does not make a path changed (reproducible builds clamp it): a path that
    # differs only in mtime is touched, not copied. Content, type, ownership, mode
    # and xattrs are compared.
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
    changed, added, deleted, kept, conflicts, touched = [], [], [], [], [], []
    for rel, new in image.items():
        if rel in skip:
            continue
        old = node.get(rel)
        if old is None:
            added.append(rel)
        elif _differs(old, new):
            if rel in guarded and new.kind != "d":
                conflicts.append("image replaces directory %s, which holds preserved paths "
                                 "or mount points, with a %s" % (show(rel), kind_name(new.kind)))
                continue
            changed.append(rel)
        elif old.mtime != new.mtime:
            touched.append(rel)
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
    touched = [r for r in touched if r not in transfer]  # rsync gives those their mtime
    return ChangeSet(
        changed=tuple(sorted(changed)), added=tuple(sorted(added)),
        deleted=tuple(sorted(deleted)),
        deleted_top=tuple(sorted(top_deleted)),
        transfer=tuple(sorted(transfer)),
        bytes=nbytes, kept=tuple(sorted(kept)), conflicts=tuple(conflicts),
        touched=tuple(sorted(touched)))


_KIND_NAMES = {"f": "file", "d": "directory", "l": "symlink", "c": "character device",
               "b": "block device", "p": "fifo", "s": "socket"}


def kind_name(kind):
    return _KIND_NAMES.get(kind, "file of unknown type")


def type_conflicts(kept, image, files=()):
    """Pure: why the image cannot be applied over the node's own paths.

    kept: {rel: kind} paths the node keeps as its own (preserved paths and the
    merged account files), as the node has them; files: paths that must be
    regular files wherever the image has them (the account databases: they are
    merged as text, never copied). A kept path keeps its type. (The directories
    above one stay directories too: diff() guards them.) A kept path the node
    lacks stays absent, whatever the image has there: the image's copy is not
    the node's own (a host key or a hostname baked into an image).
    """
    out = []
    for rel in files:
        e = image.get(rel)
        if e is not None and e.kind != "f":
            out.append("image has %s as a %s: it must be a regular file (it is merged, "
                       "not copied)" % (show(rel), kind_name(e.kind)))
    for rel, kind in sorted(kept.items()):
        e = image.get(rel)
        if e is None or kind is None or e.kind == kind or (rel in files and e.kind != "f"):
            continue
        out.append("image turns %s, a %s on the node, into a %s: the node's own paths "
                   "keep their type" % (show(rel), kind_name(kind), kind_name(e.kind)))
    return out


def too_long(image):
    """Pure: the image's paths the node cannot hold: a name over NAME_MAX bytes, or a
    path over PATH_MAX with its leading '/' and NUL. One reason, the first named."""
    bad = []
    for rel in image:
        if len(rel) * 4 <= NAME_MAX:  # no UTF-8 character is longer than 4 bytes
            continue
        raw = rel.encode("utf-8", "surrogateescape")
        if len(raw) + 2 > PATH_MAX or any(len(c) > NAME_MAX for c in raw.split(b"/")):
            bad.append((rel, len(raw)))
    if not bad:
        return []
    rel, size = min(bad)
    return ["image has %d paths longer than the system allows (a name over %d bytes or a "
            "path over %d), first %s (%d bytes)"
            % (len(bad), NAME_MAX, PATH_MAX - 1, show(rel, 120), size + 1)]
