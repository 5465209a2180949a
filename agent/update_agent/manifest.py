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

import bisect
import collections
import concurrent.futures
import fnmatch
import hashlib
import logging
import os
import re
import stat

from update_agent.errors import BadInput

LOG = logging.getLogger(__name__)

# mtime (ns) is recorded so the sync can give the node the image's times; it never
# makes an entry "changed" (see changes.py)
Entry = collections.namedtuple("Entry", "kind mode uid gid size digest xattrs link mtime",
                               defaults=(0,))
Sig = collections.namedtuple("Sig", "ino size mtime_ns ctime_ns")

KINDS = {stat.S_IFREG: "f", stat.S_IFDIR: "d", stat.S_IFLNK: "l", stat.S_IFCHR: "c",
         stat.S_IFBLK: "b", stat.S_IFIFO: "p", stat.S_IFSOCK: "s"}
HASH = "sha256"
RACY_NS = 2 * 10**9  # ctime this close to the recording time is not trusted
FORMAT_LINE = "# update-agent manifest v2"  # v2: with mtimes; a v1 cache is rebuilt
PATH_MAX = 4096   # bytes of a path, its NUL included (Linux)
NAME_MAX = 255    # bytes of one component


class OldFormat(ValueError):
    """A manifest written in another format version: rebuilt, never read."""


class PathTooLong(BadInput):
    """A tree holds a path the system cannot name (too long for PATH_MAX)."""


class Excluder:
    """Root-relative paths (and globs) that a walk skips, with their subtrees."""

    def __init__(self, patterns):
        self.exact = set()
        self.globs = {}  # depth -> [component patterns]
        for p in patterns:
            rel = os.path.normpath(p).lstrip("/")
            if any(c in rel for c in "*?["):
                parts = tuple(rel.split("/"))
                self.globs.setdefault(len(parts), []).append(parts)
            else:
                self.exact.add(rel)

    def __contains__(self, rel):
        if rel in self.exact:
            return True
        # called for every path of a walk: rule out the depths no glob has before splitting
        if rel.count("/") + 1 not in self.globs:
            return False
        parts = rel.split("/")
        # each component on its own, so '*' never matches across a '/'
        return any(all(fnmatch.fnmatchcase(c, pc) for c, pc in zip(parts, pat))
                   for pat in self.globs.get(len(parts), ()))

    def filter(self, entries):
        """Drop excluded paths and their subtrees from a full manifest."""
        keys = sorted(entries)
        drop = set()
        for p in self.exact:
            i = bisect.bisect_left(keys, p)
            if i < len(keys) and keys[i] == p:
                drop.add(p)
                i += 1
            prefix = p + "/"
            i = bisect.bisect_left(keys, prefix)
            while i < len(keys) and keys[i].startswith(prefix):
                drop.add(keys[i])
                i += 1
        if self.globs:
            for rel in keys:
                if rel not in drop and rel in self:
                    drop.add(rel)
                    prefix = rel + "/"
                    drop.update(k for k in keys if k.startswith(prefix))
        return {k: v for k, v in entries.items() if k not in drop}

    def covers(self, rel):
        """True if rel or one of its ancestors is excluded."""
        parts = rel.split("/")
        return any("/".join(parts[:i]) in self for i in range(1, len(parts) + 1))


def _xattrs(path):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ""
    if not names:
        return ""
    h = hashlib.new(HASH)
    for name in sorted(names):
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        h.update(name.encode() + b"\0" + value + b"\0")
    return h.hexdigest()[:32]


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


def show(rel, limit=160):
    """A node path for a one-line message: control characters and undecodable bytes
    escaped, a long one cut."""
    text = "/" + "".join(c if c.isprintable() else _escape(c) for c in rel)
    return text if len(text) <= limit else text[:limit] + "...(%d chars)" % (len(rel) + 1)


def _escape(c):
    if 0xdc80 <= ord(c) <= 0xdcff:  # a byte that was not UTF-8 (surrogateescape)
        return "\\x%02x" % (ord(c) - 0xdc00)
    return c.encode("unicode_escape").decode("ascii")


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


def _esc(text):
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


_ESCAPED = re.compile(r"\\(.)", re.DOTALL)
_UNESC = {"t": "\t", "n": "\n"}


def _unesc(text):
    # almost no path has a backslash: loading a 150,000-file manifest was mostly this
    if "\\" not in text:
        return text
    return _ESCAPED.sub(lambda m: _UNESC.get(m.group(1), m.group(1)), text)


def dumps(entries, sigs=None):
    lines = [FORMAT_LINE]
    for rel in sorted(entries):
        e = entries[rel]
        row = [_esc(rel), e.kind, "%o" % e.mode, str(e.uid), str(e.gid), str(e.size),
               _esc(e.digest), e.xattrs, _esc(e.link), str(e.mtime)]
        if sigs is not None and rel in sigs:
            s = sigs[rel]
            row += [str(s.ino), str(s.ctime_ns)]
        lines.append("\t".join(row))
    return "\n".join(lines) + "\n"


def loads(text):
    """Parse a manifest; returns (entries, sigs). Raises ValueError if malformed."""
    lines = text.split("\n")
    if lines[0].startswith(FORMAT_LINE[:-1]) and lines[0] != FORMAT_LINE:
        raise OldFormat("in format %r, not %r" % (lines[0][2:40], FORMAT_LINE[2:]))
    if lines[0] != FORMAT_LINE:
        raise ValueError("not an update-agent manifest in format %r (first line %r)"
                         % (FORMAT_LINE, lines[0][:60]))
    entries, sigs = {}, {}
    for number, line in enumerate(lines[1:], 2):
        if not line:
            continue
        rel, e, sig = _row(line, number)
        entries[rel] = e
        if sig is not None:
            sigs[rel] = sig
    return entries, sigs


def _row(line, number):
    f = line.split("\t")
    if len(f) not in (10, 12) or f[1] not in _KIND_LETTERS or not f[0]:
        raise ValueError("line %d: not a manifest row (%d fields)" % (number, len(f)))
    try:
        e = Entry(f[1], int(f[2], 8), int(f[3]), int(f[4]), int(f[5]), _unesc(f[6]), f[7],
                  _unesc(f[8]), int(f[9]))
        sig = Sig(int(f[10]), e.size, e.mtime, int(f[11])) if len(f) == 12 else None
    except ValueError:
        raise ValueError("line %d: a number field is not a number" % number)
    return _unesc(f[0]), e, sig


_KIND_LETTERS = set(KINDS.values()) | {"?"}


def digest_of(entries):
    """A content digest of a whole tree (used for directory images)."""
    return HASH + ":" + hashlib.new(HASH, dumps(entries).encode("utf-8", "surrogateescape")).hexdigest()


def save(path, entries, sigs=None):
    from update_agent import statefile
    statefile.write_atomic(path, dumps(entries, sigs).encode("utf-8", "surrogateescape"))


def load(path):
    """Return (entries, sigs), or ({}, {}) if the file is missing or unreadable."""
    try:
        with open(path, "rb") as f:
            return loads(f.read().decode("utf-8", "surrogateescape"))
    except FileNotFoundError:
        return {}, {}
    except OldFormat as e:  # written by another version of the agent: expected, not damage
        LOG.info("manifest %s is rebuilt: %s", path, e)
        return {}, {}
    except (OSError, ValueError) as e:  # a cache: rebuilt, never trusted when damaged
        LOG.warning("ignoring unreadable manifest %s (it is rebuilt): %s", path, e)
        return {}, {}
