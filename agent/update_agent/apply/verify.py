"""Check the synced change set against the image's manifest, before the commit.

Only the change set is read (and only its files hashed): each transferred path
must now have the image's type, mode, owner, size, content (or link target,
or device numbers) and xattrs; each merged account file the merged text; each
deleted path must be gone. Whatever the copy silently skipped fails the step,
so /etc/image_id never names an image the root does not hold.
"""

import concurrent.futures
import os
import stat

from update_agent.decide import changes
from update_agent.errors import AgentError
from update_agent.node import manifest

SHOWN = 5  # mismatches named in the error


class VerifyFailed(AgentError):
    pass


def _entry(path):
    """The manifest entry of one node path, or None if it is absent."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    kind = manifest.KINDS.get(stat.S_IFMT(st.st_mode), "?")
    digest = ""
    if kind == "l":
        digest = os.readlink(path)
    elif kind in "cb":
        digest = "%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
    return manifest.Entry(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                          st.st_size if kind == "f" else 0, digest,
                          manifest._xattrs(path), "")


def differences(have, want):
    """What differs between a node entry and the image's: a short text, '' if none."""
    if have is None:
        return "missing"
    if have.kind != want.kind:
        return "type %s, image has %s" % (have.kind, want.kind)
    out = []
    if have.mode != want.mode:
        out.append("mode %o, image has %o" % (have.mode, want.mode))
    if (have.uid, have.gid) != (want.uid, want.gid):
        out.append("owner %d:%d, image has %d:%d" % (have.uid, have.gid, want.uid, want.gid))
    if want.kind == "f":
        if have.size != want.size:
            out.append("size %d, image has %d" % (have.size, want.size))
    elif have.digest != want.digest:  # files are hashed apart, only when all else matches
        out.append("link target %r, image has %r" % (have.digest, want.digest) if want.kind == "l"
                   else "content differs")
    if have.xattrs != want.xattrs:
        out.append("xattrs differ")
    return "; ".join(out)


def mismatches(root, plan, image_entries, excluded, workers=None):
    """[(rel, what differs)] of the plan's change set on the node at root."""
    left_alone = manifest.Excluder(excluded)
    found, to_hash = [], []
    for rel in plan.changes.transfer:
        if left_alone.covers(rel):
            continue
        want, have = image_entries[rel], _entry(os.path.join(root, rel))
        why = differences(have, want)
        if why:
            found.append((rel, why))
        elif want.kind == "f":
            to_hash.append(rel)
    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 2) as pool:
        digests = pool.map(lambda r: manifest.hash_file(os.path.join(root, r)), to_hash)
        found += [(rel, "content differs") for rel, digest in zip(to_hash, digests)
                  if digest != image_entries[rel].digest]
    for rel, text in plan.accounts:
        if not left_alone.covers(rel):
            found += [(rel, why) for why in [_account_differs(root, rel, text, image_entries[rel])]
                      if why]
    holding = {a for p in left_alone.exact for a in changes.ancestors(p)}
    for rel in plan.changes.deleted_top:
        if rel not in holding and not left_alone.covers(rel) \
                and os.path.lexists(os.path.join(root, rel)):
            found.append((rel, "still present, the image deletes it"))
    return sorted(found)


def _account_differs(root, rel, text, want):
    path = os.path.join(root, rel)
    have = _entry(path)
    if have is None or have.kind != "f":
        return "missing" if have is None else "type %s, image has f" % have.kind
    with open(path, "rb") as f:
        if f.read() != text.encode("utf-8", "surrogateescape"):
            return "content differs from the merged text"
    return differences(have._replace(size=want.size, digest=want.digest, xattrs=want.xattrs), want)


def check(root, plan, image_entries, excluded):
    """Raise VerifyFailed naming the first mismatches; the root holds the change set otherwise."""
    found = mismatches(root, plan, image_entries, excluded)
    if found:
        shown = ", ".join("/%s (%s)" % m for m in found[:SHOWN])
        more = " and %d more" % (len(found) - SHOWN) if len(found) > SHOWN else ""
        raise VerifyFailed("%d paths do not match image after the sync: %s%s"
                           % (len(found), shown, more))
