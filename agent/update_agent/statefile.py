"""Atomic writes: a reader sees the old content or the new, never a mix."""

import os
import shutil
import tempfile


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path, data, mode=0o644, uid=None, gid=None, xattrs=()):
    """Write bytes to path through a temporary sibling, fsync, rename, fsync dir.

    xattrs: (name, value) pairs set on the file before it replaces path (an
    SELinux label, say).
    """
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            if uid is not None:
                os.fchown(f.fileno(), uid, gid if gid is not None else -1)
            for name, value in xattrs:
                os.setxattr(f.fileno(), name, value)
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)


def copy_atomic(src, dst):
    """Copy the regular file src (never through a symlink) to dst as write_atomic
    writes: its mode and owner kept, on disk before it has its name."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        directory = os.path.dirname(dst) or "."
        tfd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(dst) + ".", dir=directory)
        try:
            with os.fdopen(tfd, "wb") as out:
                shutil.copyfileobj(f, out, 1 << 20)
                os.fchmod(out.fileno(), st.st_mode & 0o7777)
                os.fchown(out.fileno(), st.st_uid, st.st_gid)
                os.fsync(out.fileno())
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.rename(tmp, dst)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
    fsync_dir(directory)
