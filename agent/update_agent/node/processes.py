"""Read-only: which processes run code from the node's root, and what they hold.

For each process the executable's and every mapped file's inode (from
/proc/PID/maps, which, unlike psutil's memory_maps, gives device and inode),
its unit (from its cgroup), its command line and its root. Matching by inode
is exact: the sync replaces a file by renaming a new one over it, so a process
runs replaced code exactly when it maps an inode the sync replaces.
"""

import ast
import dataclasses
import logging
import os
import stat

import psutil

from update_agent.decide import restarts

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Proc:
    pid: int
    name: str
    unit: str            # "nginx.service", "session-3.scope", "" for none
    exe: str             # node path ("" when unknown)
    exe_ino: int
    inodes: frozenset    # inodes on the root's filesystem it maps or holds open (exe included)
    cmdline: tuple
    cwd: str             # node path
    script: str = ""     # node path of the script an interpreter runs, "" if none
    started: float = 0.0  # when the process started (epoch seconds)

    @property
    def is_pid1(self):
        return self.pid == 1


def unit_of(pid):
    """The systemd unit a process belongs to, from its cgroup (v2 or v1 name=systemd)."""
    try:
        with open("/proc/%d/cgroup" % pid, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    for line in lines:
        hierarchy, _, path = line.partition(":")[2].partition(":")
        if hierarchy not in ("", "name=systemd"):
            continue
        for part in reversed(path.split("/")):
            if part.endswith((".service", ".scope")):
                return part
    return ""


def _node_path(path, root, prefix):
    """A path as the process sees it, as a node path; None if outside the node."""
    if root is None:
        return path
    if path.startswith(prefix):
        return "/" + path[len(prefix):]
    return None


def maps_on(pid, dev):
    """The /proc/PID/maps lines of files on device dev, split in six fields
    (range, perms, offset, device, inode, path)."""
    try:
        with open("/proc/%d/maps" % pid, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return
    for line in lines:
        fields = line.split(None, 5)
        if len(fields) < 6 or fields[4] == "0":
            continue
        major, minor = (int(x, 16) for x in fields[3].split(":"))
        if os.makedev(major, minor) == dev:
            yield fields


def open_on(pid, dev):
    """(fd, stat) of the regular files on device dev that pid holds open: a replaced
    one stays allocated (and keeps remount,ro from succeeding), mapped or not."""
    fd_dir = "/proc/%d/fd" % pid
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return
    for fd in fds:
        try:
            st = os.stat(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if st.st_dev == dev and stat.S_ISREG(st.st_mode):
            yield fd, st


def scan(root):
    """Every process whose files live on the node's root filesystem."""
    root = os.path.realpath(root)
    dev = os.stat(root).st_dev
    prefix = root.rstrip("/") + "/"
    out = []
    for p in psutil.process_iter(["pid", "name"]):
        pid = p.info["pid"]
        try:
            proc_root = os.path.realpath("/proc/%d/root" % pid)
            # a process chrooted in the node (a container) sees node paths as they are
            in_node = proc_root == root
            strip = None if in_node or root == "/" else root
            inodes = {int(fields[4]) for fields in maps_on(pid, dev)}
            inodes |= {st.st_ino for _fd, st in open_on(pid, dev)}
            try:
                st = os.stat("/proc/%d/exe" % pid)
                exe_ino = st.st_ino if st.st_dev == dev else 0
            except OSError:
                exe_ino = 0
            if exe_ino:
                inodes.add(exe_ino)
            try:
                works_here = os.stat("/proc/%d/cwd" % pid).st_dev == dev
            except OSError:
                works_here = False
            if not inodes and not works_here:
                continue  # nothing of the node's in use (an interpreter may run it, though)
            exe = _node_path(p.exe(), strip, prefix) or ""
            cwd_seen = p.cwd()
            cwd = _node_path(cwd_seen, strip, prefix) or ""
            cmdline = tuple(p.cmdline())
            script, _module = restarts.script_of(cmdline)
            if script:
                script = _node_path(os.path.normpath(os.path.join(cwd_seen, script)), strip, prefix) or ""
            out.append(Proc(pid, p.info["name"] or "", unit_of(pid), exe, exe_ino,
                            frozenset(inodes), cmdline, cwd, script, p.create_time()))
        except (psutil.Error, OSError):
            continue
    return out


def python_imports(proc, node_path, max_bytes=1 << 20):
    """Top-level module names a Python process's script imports (read from the node)."""
    if not restarts.PYTHON.match(os.path.basename(proc.exe or proc.name or "")) or not proc.script:
        return frozenset()
    path = node_path(proc.script)
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(max_bytes))
    except Exception:  # any script a user can write must not stop the agent
        return frozenset()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return frozenset(names)
