"""Atomic writes: a reader sees the old content or the new, never a mix."""

import contextlib
import json
import os
import shutil
import tempfile


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _replacing(path):
    """A temporary sibling of path, open for writing: on disk and renamed over path
    (its directory fsynced) when the block ends, removed if the block raises."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)


def write_atomic(path, data, mode=0o644, uid=None, gid=None, xattrs=()):
    """Write bytes to path through a temporary sibling, fsync, rename, fsync dir.

    xattrs: (name, value) pairs set on the file before it replaces path (an
    SELinux label, say).
    """
    with _replacing(path) as f:
        f.write(data)
        os.fchmod(f.fileno(), mode)
        if uid is not None:
            os.fchown(f.fileno(), uid, gid if gid is not None else -1)
        for name, value in xattrs:
            os.setxattr(f.fileno(), name, value)


def write_chunks_atomic(path, chunks, mode=0o644):
    """write_atomic of the bytes of chunks, one after another: a large file (a manifest
    of 150,000 paths) is never held whole in memory to be written."""
    with _replacing(path) as f:
        for chunk in chunks:
            f.write(chunk)
        os.fchmod(f.fileno(), mode)


def copy_atomic(src, dst):
    """Copy the regular file src (never through a symlink) to dst as write_atomic
    writes: its mode, owner and times kept, on disk before it has its name."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f, _replacing(dst) as out:
        st = os.fstat(f.fileno())
        shutil.copyfileobj(f, out, 1 << 20)
        out.flush()  # before the times: a later write would move the mtime
        os.fchmod(out.fileno(), st.st_mode & 0o7777)
        os.fchown(out.fileno(), st.st_uid, st.st_gid)
        os.utime(out.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))


def write_json(path, data):
    """A state file: JSON, sorted and indented as the state dir has always held it,
    readable by root alone; its directory made if missing."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode(), mode=0o600)
