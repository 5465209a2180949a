"""What a manifest says of one path, and the text a manifest is kept in.

Pure: the walk that builds entries from a tree is node/manifest.py. The plan,
the change set and the kernel checks read entries without touching a file.
"""

import bisect
import collections
import fnmatch
import hashlib
import os
import re
import stat

from update_agent.errors import BadInput

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


def show(rel, limit=160):
    """A node path for a one-line message: control characters and undecodable bytes
    escaped, a long one cut."""
    text = "/" + "".join(c if c.isprintable() else _escape(c) for c in rel)
    return text if len(text) <= limit else text[:limit] + "...(%d chars)" % (len(rel) + 1)


def _escape(c):
    if 0xdc80 <= ord(c) <= 0xdcff:  # a byte that was not UTF-8 (surrogateescape)
        return "\\x%02x" % (ord(c) - 0xdc00)
    return c.encode("unicode_escape").decode("ascii")


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
    return "".join(rows(entries, sigs))


def rows(entries, sigs=None):
    """The manifest's text, line by line (its format line first)."""
    yield FORMAT_LINE + "\n"
    for rel in sorted(entries):
        e = entries[rel]
        row = [_esc(rel), e.kind, "%o" % e.mode, str(e.uid), str(e.gid), str(e.size),
               _esc(e.digest), e.xattrs, _esc(e.link), str(e.mtime)]
        if sigs is not None and rel in sigs:
            s = sigs[rel]
            row += [str(s.ino), str(s.ctime_ns)]
        yield "\t".join(row) + "\n"


def loads(text, like=None):
    """Parse a manifest; returns (entries, sigs). Raises ValueError if malformed.

    like: another manifest ({rel: Entry}) whose equal entries are used in place of
    this one's: a node's manifest mostly equals its image's, and 150,000 entries held
    twice are tens of MB."""
    return parse(_lines(text), like)


def parse(lines, like=None):
    """loads() of an iterable of lines (a file opened with newline="\n"): its rows are
    read one by one, never all at once as well as parsed."""
    lines = iter(lines)
    first = next(lines, "").rstrip("\n")
    if first.startswith(FORMAT_LINE[:-1]) and first != FORMAT_LINE:
        raise OldFormat("in format %r, not %r" % (first[2:40], FORMAT_LINE[2:]))
    if first != FORMAT_LINE:
        raise ValueError("not an update-agent manifest in format %r (first line %r)"
                         % (FORMAT_LINE, first[:60]))
    entries, sigs = {}, {}
    for number, line in enumerate(lines, 2):
        line = line.rstrip("\n")
        if not line:
            continue
        rel, e, sig = _row(line, number)
        entries[rel] = e if like is None else _shared(like, rel, e)
        if sig is not None:
            sigs[rel] = sig
    return entries, sigs


def _lines(text):
    """text's lines, one at a time (io.StringIO would copy text at 4 bytes a character)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


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


def _shared(like, rel, e):
    same = like.get(rel)
    return same if same == e else e


def share(entries, like):
    """entries, each equal to like's entry of its path replaced by that one (see loads)."""
    for rel, e in entries.items():
        same = like.get(rel)
        if same is not e and same == e:
            entries[rel] = same
    return entries


def digest_of(entries):
    """A content digest of a whole tree (used for directory images)."""
    return HASH + ":" + hashlib.new(HASH, dumps(entries).encode("utf-8", "surrogateescape")).hexdigest()
