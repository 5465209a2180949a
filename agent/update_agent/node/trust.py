"""Trust, like sshd's StrictModes: what the agent obeys only root may have written.

A hook, a config file or drop-in, a signature key and the state dir are
trusted only if every component of their path, from the node's root down, is
owned by uid 0 and writable by neither group nor others. A symlink is followed
inside the node's root (as in a chroot: an absolute target starts again at the
root, '..' never climbs above it), and its target and every directory on the
target's path are judged too. A sticky directory such as /tmp is not trusted:
anyone may add a name to it. The directories above a sandbox --root belong to
the host and are not judged.
"""

import os
import posixpath
import stat

from update_agent.errors import BadInput

MAX_SYMLINKS = 40


class Untrusted(BadInput):
    """A path the agent would obey could have been written by someone but root."""


def flaw(st):
    """Why this lstat result is not trustworthy, or '' if it is."""
    if st.st_uid != 0:
        return "is owned by uid %d, not root" % st.st_uid
    if stat.S_ISLNK(st.st_mode):
        return ""  # a link's own mode is always 0777; what it points to is judged next
    writable = [who for bit, who in ((stat.S_IWGRP, "group"), (stat.S_IWOTH, "others"))
                if st.st_mode & bit]
    if writable:
        return "is writable by %s (mode %04o)" % (" and ".join(writable), stat.S_IMODE(st.st_mode))
    return ""


def _components(path):
    return [c for c in path.split("/") if c not in ("", ".")]


def check(root, node_path, what, missing_ok=False, lstat=os.lstat, readlink=os.readlink):
    """Judge node_path from root down; return the host path it leads to.

    Raise Untrusted naming what, its path and the first component at fault.
    missing_ok: a path that does not exist (yet) is judged as far as it exists.
    """
    root = os.path.abspath(root)
    shown = os.path.join(root, *_components(posixpath.normpath("/" + node_path)))

    def refuse(component, reason):
        subject = "it" if component == shown else component
        raise Untrusted("refusing %s %s: %s %s" % (what, shown, subject, reason))

    _judge(root, lstat, refuse)
    pending, parts, links = _components(node_path), [], 0
    while pending:
        comp = pending.pop(0)
        if comp == "..":
            if parts:
                parts.pop()
            continue
        host = os.path.join(root, *parts, comp)
        st = _judge(host, lstat, refuse)
        if st is None:
            if missing_ok:
                return os.path.join(host, *pending)
            refuse(host, "does not exist")
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_SYMLINKS:
                refuse(host, "leads through too many symlinks")
            target = readlink(host)
            if target.startswith("/"):
                parts = []
            pending = _components(target) + pending
            continue
        parts.append(comp)
    return os.path.join(root, *parts)


def _judge(host, lstat, refuse):
    try:
        st = lstat(host)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        refuse(host, "cannot be checked: %s" % e.strerror)
    reason = flaw(st)
    if reason:
        refuse(host, reason)
    return st


def same_on_host(host_path, judged, what):
    """Refuse host_path if this machine would follow it elsewhere than to what was judged.

    Under a sandbox --root an absolute link resolves inside the root for the check
    but on the host for a tool that opens it (dib-run-parts, say)."""
    if os.path.realpath(host_path) != os.path.realpath(judged):
        raise Untrusted("refusing %s %s: on this host it leads to %s, not to %s inside the "
                        "node's root" % (what, host_path, os.path.realpath(host_path), judged))
    return judged


def node_path(root, host_path):
    """The node path of a host path below root (not resolved); None if outside it."""
    root, host_path = os.path.abspath(root), os.path.abspath(host_path)
    rel = os.path.relpath(host_path, root)
    if rel == "." or not (rel == ".." or rel.startswith("../")):
        return posixpath.join("/", "" if rel == "." else rel)
    return None
