"""Loop devices, mounts and temp dirs that are always released again.

Each helper is a context manager whose exit undoes exactly what its entry
did, also when the body raises, so callers can stack them freely.
"""

import contextlib
import logging
import os
import shutil
import tempfile

from update_agent.errors import AgentError, CommandFailed

LOG = logging.getLogger(__name__)


def _fresh_dir(work_dir, prefix):
    # a full state dir (bytes or inodes) is the operator's to fix: say which
    try:
        os.makedirs(work_dir, exist_ok=True)
        return tempfile.mkdtemp(prefix=prefix, dir=work_dir)
    except OSError as e:
        raise AgentError("cannot make a directory in the work dir %s: %s" % (work_dir, e.strerror))


@contextlib.contextmanager
def temp_dir(work_dir, prefix):
    """A fresh directory under work_dir, removed with its contents on exit."""
    path = _fresh_dir(work_dir, prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def attach(system, path, *, offset=None, sizelimit=None, partscan=False, read_only=True):
    """Attach path to a free loop device (read-only by default); yield /dev/loopN."""
    argv = ["losetup", "--find", "--show"]
    if read_only:
        argv.append("--read-only")
    if partscan:
        argv.append("--partscan")
    if offset is not None:
        argv += ["--offset", str(offset)]
    if sizelimit is not None:
        argv += ["--sizelimit", str(sizelimit)]
    try:
        dev = system.run(argv + [path]).stdout.strip()
    except CommandFailed as exc:
        raise AgentError("image %s: cannot attach a loop device: %s" % (path, _last_line(exc.stderr)))
    LOG.debug("attached %s to %s", path, dev)
    try:
        yield dev
    finally:
        # A busy device is only flagged for autoclear by the kernel; one that was
        # mounted is already flagged (see mount) and gone with its unmount.
        proc = system.run(["losetup", "--detach", dev], check=False)
        if proc.returncode != 0 and "No such device" not in (proc.stderr or ""):
            LOG.warning("losetup --detach %s failed: %s", dev, _last_line(proc.stderr))


@contextlib.contextmanager
def mount(system, source, fstype, options, work_dir, what):
    """Mount source at a fresh dir under work_dir; yield that dir.

    what names the image in errors, as the device name means nothing to an
    operator.
    """
    target = _fresh_dir(work_dir, "mnt-")
    try:
        argv = ["mount", "-t", fstype, "-o", ",".join(options), source, target]
        try:
            system.run(argv)
        except CommandFailed as exc:
            raise AgentError("image %s: cannot mount %s filesystem: %s"
                             % (what, fstype, _last_line(exc.stderr)))
        if source.startswith("/dev/loop"):
            # autoclear: the device goes away with its last unmount, even if this
            # process is killed before it can detach it
            system.run(["losetup", "--detach", source], check=False)
        try:
            yield target
        finally:
            umount(system, target)
    finally:
        # rmdir, never rmtree: if the unmount failed this refuses (EBUSY)
        # instead of deleting files inside the mounted filesystem.
        with contextlib.suppress(OSError):
            os.rmdir(target)


def umount(system, target):
    proc = system.run(["umount", target], check=False)
    if proc.returncode != 0:
        # Something still holds the tree open; detach it lazily rather than
        # leave it mounted under work_dir (the fs is read-only, nothing is lost).
        LOG.warning("umount %s failed (%s); detaching lazily", target, _last_line(proc.stderr))
        proc = system.run(["umount", "--lazy", target], check=False)
        if proc.returncode != 0:
            raise AgentError("cannot unmount %s: %s" % (target, _last_line(proc.stderr)))


def _last_line(text):
    lines = (text or "").strip().splitlines()
    return lines[-1].strip() if lines else "no error output"


def cleanup_stale(system, work_dir, mounts, backing_dirs):
    """Undo what a killed run left: mounts under work_dir, loop devices on our
    images (backing files under backing_dirs), and leftover temp trees."""
    work_dir = os.path.realpath(work_dir)
    stale = sorted((m.mount_point for m in mounts
                    if m.mount_point.startswith(work_dir.rstrip("/") + "/")),
                   key=len, reverse=True)
    for target in stale:
        LOG.warning("unmounting %s, left behind by an earlier run", target)
        system.run(["umount", "--lazy", target], check=False)
    # matched by the backing file's device and inode: the kernel's path for it is
    # relative to whichever mount it was reached through, and may be stale
    ours = set()
    for d in backing_dirs:
        for dirpath, _dirs, files in os.walk(d):
            for name in files:
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except OSError:
                    continue
                ours.add((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))
    listing = system.run(["losetup", "--list", "--noheadings", "--output",
                          "NAME,BACK-MAJ:MIN,BACK-INO"], check=False).stdout or ""
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[1] or not parts[2].isdigit():
            continue
        major, minor = (int(x) for x in parts[1].split(":"))
        if (major, minor, int(parts[2])) in ours:
            LOG.warning("detaching %s, left behind by an earlier run", parts[0])
            system.run(["losetup", "--detach", parts[0]], check=False)
    if stale:
        return  # lazily detached trees may still be draining: leave their dirs for next time
    for name in os.listdir(work_dir):
        path = os.path.join(work_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
