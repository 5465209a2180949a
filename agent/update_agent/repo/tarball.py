"""A tar archive's manifest and contents read from its headers, without unpacking it:
how a user who is not root publishes one (unpacking would lose the owners, and the
xattrs only root may set). The entries are those GNU tar's unpacking as root gives."""

import collections
import hashlib
import os
import posixpath
import tarfile

from update_agent.decide.entries import Entry, show
from update_agent.errors import AgentError, BadInput, CommandFailed
from update_agent.node import manifest

XATTR = "SCHILY.xattr."
MODES = {"tar": "r|", "tar.gz": "r|gz", "tar.zst": "r|"}
Read = collections.namedtuple("Read", "entries xattrs top rel_of")


def read(path, fmt, system, scratch):
    """Read(entries, {rel: {name: value}}, top, {hex: file under top}) of the archive;
    each content is stored once, named by its hex, in top (a directory in scratch)."""
    if fmt == "tar.zst":
        plain = os.path.join(scratch, "image.tar")
        try:
            system.run([system.which("zstd"), "-d", "-q", "-f", "-o", plain, "--", path])
        except CommandFailed as e:
            raise AgentError("image %s: cannot decompress: %s" % (path, e.stderr.strip()[-200:]))
        path = plain
    top = os.path.join(scratch, "content")
    os.makedirs(top)
    entries, values, linked = {}, {}, collections.defaultdict(list)
    try:
        with tarfile.open(path, MODES[fmt]) as tar:
            for member in tar:
                rel = _rel(member.name, path)
                if not rel:
                    continue  # the root itself: not a manifest line
                attrs = {k[len(XATTR):]: v.encode("utf-8", "surrogateescape")
                         for k, v in member.pax_headers.items() if k.startswith(XATTR)}
                if member.islnk():
                    target = _rel(member.linkname, path)
                    if target not in entries or entries[target].kind != "f":
                        raise BadInput("image %s: hard link %s to %s, which is not a file before it"
                                       % (path, show(rel), show(target)))
                    entries[rel] = entries[target]
                    linked[target].append(rel)
                    if target in values:
                        values[rel] = values[target]
                    continue
                entries[rel] = _entry(member, attrs, tar, top)
                if attrs:
                    values[rel] = attrs
    except (tarfile.TarError, EOFError) as e:
        raise AgentError("image %s: cannot read the tar archive: %s" % (path, e))
    for target, members in linked.items():
        leader = min([target] + members)
        for rel in [target] + members:
            entries[rel] = entries[rel]._replace(link=leader)
    return Read(entries, values, top, {e.digest: e.digest for e in entries.values() if e.kind == "f"})


def _rel(name, path):
    # as GNU tar unpacks: a leading "/" is dropped, a ".." member refused
    if ".." in name.split("/"):
        raise BadInput("image %s: member %s leaves the image's root" % (path, name[:160]))
    rel = posixpath.normpath("/" + name).lstrip("/")
    return "" if rel == "." else rel


def _entry(member, attrs, tar, top):
    digest, size = "", 0
    if member.isreg():
        digest, size = _store(tar.extractfile(member), top), member.size
        kind = "f"
    elif member.isdir():
        kind = "d"
    elif member.issym():
        kind, digest = "l", member.linkname
    elif member.ischr() or member.isblk():
        kind, digest = ("c" if member.ischr() else "b"), "%d,%d" % (member.devmajor, member.devminor)
    elif member.isfifo():
        kind = "p"
    else:
        kind = "?"
    return Entry(kind, member.mode & 0o7777, member.uid, member.gid, size, digest,
                 manifest.xattrs_hash(attrs), "", _mtime_ns(member))


def _store(f, top):
    """Copy one member's bytes to top/<its sha256>; return the hex."""
    h = hashlib.sha256()
    tmp = os.path.join(top, ".member")
    with open(tmp, "wb") as out:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            out.write(block)
    hexdigest = h.hexdigest()
    os.replace(tmp, os.path.join(top, hexdigest))
    return hexdigest


def _mtime_ns(member):
    """Exact, from the pax header's decimal text (the float loses nanoseconds)."""
    text = member.pax_headers.get("mtime")
    if text is None:
        return int(member.mtime) * 10**9
    seconds, _, fraction = text.partition(".")
    ns = int(seconds) * 10**9
    return ns + (int(fraction[:9].ljust(9, "0")) if fraction else 0) * (1 if ns >= 0 else -1)
