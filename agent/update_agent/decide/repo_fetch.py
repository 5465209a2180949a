"""Pure: which contents a node fetches from an object repository, and how.

From the plan's change set and the image's manifest, the contents the node must
write; minus those it already holds (on the node, in its staging tree); grouped
by the repository file holding them into as few requests as the layout allows.
--dry-run prints the result; the fetch (repo/objects.py) performs exactly it.
"""

import dataclasses

# Neighbouring members of one pack closer than this are fetched in one range, the
# bytes between them too: a request costs more than 64 KiB at any speed worth having.
MERGE_GAP = 64 * 1024
# A pack is always asked for by range, even whole: a pack an older image wrote may
# hold more than this image's index tells, and a range fetches exactly what is
# counted. A cache configured as docs/caching.md says keeps ranges too.


@dataclasses.dataclass(frozen=True)
class Member:
    hexdigest: str
    offset: int
    length: int     # compressed bytes: one zstd frame
    size: int       # its content's bytes


@dataclasses.dataclass(frozen=True)
class Request:
    """One GET: a repository file, whole (span None) or one byte range of it."""

    path: str
    span: tuple          # (first byte, length) or None for the whole file
    members: tuple       # the Members it brings, in offset order

    @property
    def bytes(self):
        if self.span is not None:
            return self.span[1]
        return max(m.offset + m.length for m in self.members)


@dataclasses.dataclass(frozen=True)
class FetchPlan:
    requests: tuple = ()
    local: int = 0        # contents copied from the node or already staged
    missing: tuple = ()   # contents no index line locates: the image cannot be applied

    @property
    def bytes(self):
        return sum(r.bytes for r in self.requests)

    @property
    def contents(self):
        return sum(len(r.members) for r in self.requests)

    def to_dict(self):
        return {"bytes": self.bytes, "requests": len(self.requests),
                "contents": self.contents, "local": self.local, "missing": len(self.missing)}


def wanted(rels, image_entries):
    """{hex: size} of the contents the image's files at rels hold (each once)."""
    out = {}
    for rel in rels:
        e = image_entries.get(rel)
        if e is not None and e.kind == "f" and e.size > 0:
            out[e.digest] = e.size
    return out


def plan(want, have, locations):
    """want: {hex: size}; have: the hexes the node already holds; locations: the
    index, {hex: (path, offset, length)}."""
    needed = {h: s for h, s in want.items() if h not in have}
    by_path, missing = {}, []
    for h in sorted(needed):
        where = locations.get(h)
        if where is None:
            missing.append(h)
            continue
        path, offset, length = where
        by_path.setdefault(path, []).append(Member(h, offset, length, needed[h]))
    requests = []
    for path in sorted(by_path):
        requests += _requests(path, sorted(by_path[path], key=lambda m: m.offset))
    return FetchPlan(tuple(requests), len(want) - len(needed), tuple(missing))


def _requests(path, members):
    """An object whole; a pack's members in merged ranges."""
    if path.startswith("objects/"):
        return [Request(path, None, tuple(members))]
    out, run = [], [members[0]]
    for m in members[1:]:
        last = run[-1]
        if m.offset - (last.offset + last.length) <= MERGE_GAP:
            run.append(m)
        else:
            out.append(_ranged(path, run))
            run = [m]
    out.append(_ranged(path, run))
    return out


def _ranged(path, run):
    first = run[0].offset
    end = run[-1].offset + run[-1].length
    return Request(path, (first, end - first), tuple(run))
