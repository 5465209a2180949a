"""Per-file manifests of a tree: type, mode, owner, size, content hash, xattrs.

The change set is the difference of two manifests (node against image), as
swupd and freebsd-update compute it. A manifest is content-exact: a file whose
bytes changed at the same size and mtime still differs. Hashing is the slow
part, so:
  * an image's manifest is computed once, when it is staged, and cached by the
    image's digest (images are immutable);
  * the node's manifest reuses the hash of any file whose stat signature
    (inode, size, mtime, ctime) is unchanged since it was last hashed, as git's
    index does. ctime cannot be set from user space, so a rewrite is always
    seen; entries whose ctime is too close to the recording time are rehashed.
"""

import collections
import concurrent.futures
import hashlib
import logging
import os
import stat

from update_agent.decide.entries import (  # noqa: F401 (walk callers read them here)
    FORMAT_LINE, HASH, KINDS, NAME_MAX, PATH_MAX, RACY_NS, Entry, Excluder, OldFormat, PathTooLong, Sig,
    digest_of, dumps, loads, parse, rows, share, show
)

LOG = logging.getLogger(__name__)


def xattr_values(path):
    """{name: value} of a path's extended attributes (those that can be read)."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    values = {}
    for name in sorted(names):
        try:
            values[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
    return values


def xattrs_hash(values):
    """What a manifest entry keeps of the xattrs: a hash of names and values."""
    return _hash(values) if values else ""


def _hash(values):
    h = hashlib.new(HASH)
    for name in sorted(values):
        h.update(name.encode() + b"\0" + values[name] + b"\0")
    return h.hexdigest()[:32]


def _xattrs(path):
    try:
        if not os.listxattr(path, follow_symlinks=False):
            return ""
    except OSError:
        return ""
    return _hash(xattr_values(path))  # named but unreadable ones still mark the entry


def hash_file(path):
    with open(path, "rb", buffering=0) as f:
        return hashlib.file_digest(f, HASH).hexdigest()


def _kind_of(de):
    try:
        return KINDS.get(stat.S_IFMT(de.stat(follow_symlinks=False).st_mode), "?")
    except OSError:
        return "?"


def _check_length(host, rel):
    # scandir, open and readlink of a longer path fail with ENAMETOOLONG: name the path
    if len(os.fsencode(host)) >= PATH_MAX:
        raise PathTooLong("the path %s cannot be handled: with its root it is %d bytes, "
                          "the system's limit is %d" % (show(rel, 120), len(os.fsencode(host)),
                                                        PATH_MAX - 1))


def walk(top, excluder, skip_devices=True, skipped=None):
    """Yield (rel, st) for every entry below top, not crossing filesystems.

    skipped (a dict) receives {rel: kind} of the excluded paths and mount points
    met on the way: the node keeps them, and keeps their type.
    """
    top_dev = os.lstat(top).st_dev
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        host_dir = os.path.join(top, rel_dir) if rel_dir else top
        dir_bytes = len(os.fsencode(host_dir))
        with os.scandir(host_dir) as it:
            for de in it:
                rel = rel_dir + "/" + de.name if rel_dir else de.name
                if dir_bytes + 1 + 4 * len(de.name) >= PATH_MAX:  # may be too long: count
                    _check_length(de.path, rel)
                if rel in excluder:
                    if skipped is not None:
                        skipped[rel] = _kind_of(de)
                    continue
                st = de.stat(follow_symlinks=False)
                if skip_devices and st.st_dev != top_dev:
                    if skipped is not None:
                        skipped[rel] = KINDS.get(stat.S_IFMT(st.st_mode), "?")
                    continue  # a mount point inside the tree: not ours to walk
                yield rel, st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(rel)


def build(top, excluder, cache=None, trusted_before_ns=None, workers=None, skip_devices=True,
          skipped=None):
    """Return (entries, sigs) for the tree at top.

    cache: {rel: (Sig, digest)} from an earlier manifest of the same tree.
    skipped: a dict that receives {rel: kind} of the excluded paths present in the tree.
    """
    cache = cache or {}
    entries, sigs, to_hash = {}, {}, []
    links = collections.defaultdict(list)
    for rel, st in walk(top, excluder, skip_devices, skipped):
        kind = KINDS.get(stat.S_IFMT(st.st_mode), "?")
        host = os.path.join(top, rel)
        digest, size = "", (st.st_size if kind == "f" else 0)
        # with the size a manifest keeps (files only), so that a loaded cache compares equal
        sig = Sig(st.st_ino, size, st.st_mtime_ns, st.st_ctime_ns)
        if kind == "f":
            cached = cache.get(rel)
            if (cached and cached[0] == sig
                    and (trusted_before_ns is None or st.st_ctime_ns < trusted_before_ns)):
                digest = cached[1]
            else:
                to_hash.append(rel)
            if st.st_nlink > 1:
                links[(st.st_dev, st.st_ino)].append(rel)
        elif kind == "l":
            digest = os.readlink(host)
        elif kind in "cb":
            digest = "%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
        entries[rel] = Entry(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size,
                             digest, _xattrs(host), "", st.st_mtime_ns)
        sigs[rel] = sig
    if to_hash:
        LOG.debug("hashing %d files under %s", len(to_hash), top)
        with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 2) as pool:
            for rel, digest in zip(to_hash, pool.map(lambda r: hash_file(os.path.join(top, r)), to_hash)):
                entries[rel] = entries[rel]._replace(digest=digest)
    for members in links.values():
        if len(members) > 1:
            leader = min(members)
            for rel in members:
                entries[rel] = entries[rel]._replace(link=leader)
    return entries, sigs


def save(path, entries, sigs=None):
    from update_agent.state import statefile
    statefile.write_chunks_atomic(path, (r.encode("utf-8", "surrogateescape")
                                         for r in rows(entries, sigs)))


def load(path, like=None):
    """Return (entries, sigs), or ({}, {}) if the file is missing or unreadable.
    like: see entries.loads."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
            return parse(f, like)
    except FileNotFoundError:
        return {}, {}
    except OldFormat as e:  # written by another version of the agent: expected, not damage
        LOG.info("manifest %s is rebuilt: %s", path, e)
        return {}, {}
    except (OSError, ValueError) as e:  # a cache: rebuilt, never trusted when damaged
        LOG.warning("ignoring unreadable manifest %s (it is rebuilt): %s", path, e)
        return {}, {}
