"""Pure: which processes run code the sync replaces, and what to do about them.

A process runs replaced code when it maps (or executes) an inode the sync
replaces or deletes, matched by inode and so scoped to this sync on this root
(no false positives from files a program deletes on purpose, as needrestart
has). Interpreted code is not mapped: a Python process is also affected when
its script, a module beside it, or a package it imports changed, as
needrestart's interpreter scanners judge it.
"""

import dataclasses
import fnmatch
import posixpath
import re

UNIT_DIRS = ("etc/systemd/system/", "lib/systemd/system/", "usr/lib/systemd/system/")
PYTHON = re.compile(r"^python[0-9.]*$")
SITE = re.compile(r"(?:^|/)(?:site|dist)-packages/([^/]+)")
# restarted before the rest: logging first, then device management
FIRST = ("systemd-journald.service", "systemd-udevd.service")


@dataclasses.dataclass(frozen=True)
class Policy:
    mode: str = "auto"               # auto: restart when systemd runs this root; report: never act
    never_restart: tuple = ("dbus.service", "dbus-broker.service", "systemd-logind.service",
                            "user@*.service", "getty@*.service", "serial-getty@*.service",
                            "console-getty.service", "container-getty@*.service")
    leave_to_hooks: tuple = ("pacemaker.service", "pacemaker_remote.service",
                             "corosync.service")
    agent_unit: str = "update-agent.service"


@dataclasses.dataclass(frozen=True)
class RestartPlan:
    restart: tuple = ()         # units to restart, in order
    excluded: tuple = ()        # (unit, why): policy says no; they keep running old code
    hooks: tuple = ()           # cluster-managed units: their hooks restart them
    outside: tuple = ()         # (pid, name, scope): not in a service; restart by hand
    daemon_reexec: bool = False
    daemon_reload: bool = False
    agent: bool = False         # the agent itself runs replaced code
    affected: tuple = ()        # (pid, unit, why) for every process found
    targets: tuple = ()         # (inode, path) of every file the sync replaces or deletes

    def to_dict(self):
        return {"units": list(self.restart), "excluded": [list(e) for e in self.excluded],
                "left_to_hooks": list(self.hooks),
                "outside_units": [{"pid": p, "name": n, "scope": s} for p, n, s in self.outside],
                "daemon_reexec": self.daemon_reexec, "daemon_reload": self.daemon_reload,
                "agent_restarts": self.agent}


def script_of(cmdline):
    """(script, module) a Python command line runs; either may be ""."""
    args = list(cmdline[1:])
    while args:
        a = args.pop(0)
        if a == "-m" and args:
            return "", args[0]
        if a.startswith("-m") and len(a) > 2:
            return "", a[2:]
        if a == "-c":
            return "", ""
        if a in ("-X", "-W", "-Q") and args:
            args.pop(0)
            continue
        if a.startswith("-"):
            continue
        return a, ""
    return "", ""


def python_reasons(proc, changed, imports):
    """Why a Python process runs replaced code (changed: root-relative paths)."""
    if not PYTHON.match(posixpath.basename(proc.exe or proc.name or "")):
        return []
    _script, module = script_of(proc.cmdline)
    why = []
    if proc.script:
        path = proc.script.lstrip("/")
        if path in changed:
            why.append("its script /%s changed" % path)
        here = posixpath.dirname(path) + "/"
        sibling = [c for c in changed if c.startswith(here) and c.endswith(".py") and c != path]
        if sibling:
            why.append("modules beside its script changed (/%s)" % sibling[0])
    tops = set(imports or ())
    if module:
        tops.add(module.split(".")[0])
    for c in changed:
        m = SITE.search(c)
        if m and m.group(1).split(".")[0] in tops and c.endswith((".py", ".so")):
            why.append("package %s it imports changed (/%s)" % (m.group(1).split(".")[0], c))
            break
    return why


def _matches(unit, patterns):
    return any(fnmatch.fnmatchcase(unit, p) for p in patterns)


def targets_of(change_set, node_sigs):
    """{inode: path} of the node's files the sync replaces or deletes."""
    gone = set(change_set.changed) | set(change_set.deleted)
    return {node_sigs[r].ino: r for r in gone if r in node_sigs}


def decide(procs, change_set, targets, policy=Policy(), imports=None, agent_pid=None,
           since=None):
    """The RestartPlan for a sync: procs from processes.scan, targets from
    targets_of (taken before the sync), imports {pid: top-level module names}.

    After the sync, targets must be the pinned inodes only (the replaced inodes
    nothing held are free, and new files may reuse their numbers), and since the
    time the sync began: a process started later runs the new code."""
    changed = set(change_set.changed) | set(change_set.added) | set(change_set.deleted)
    imports = imports or {}
    units, excluded, hooks, outside, affected = [], {}, [], [], []
    reexec = agent = False
    for proc in procs:
        hit = proc.inodes & targets.keys()
        why = ["uses replaced /%s" % targets[i] for i in sorted(hit)][:3]
        if since is None or proc.started < since:
            why += python_reasons(proc, changed, imports.get(proc.pid))
        if not why:
            continue
        affected.append((proc.pid, proc.unit, "; ".join(why)))
        if proc.is_pid1:
            reexec = True
        elif proc.pid == agent_pid or proc.unit == policy.agent_unit:
            agent = True
        elif not proc.unit.endswith(".service"):
            outside.append((proc.pid, proc.name, proc.unit or "-"))
        elif _matches(proc.unit, policy.leave_to_hooks):
            hooks.append(proc.unit)
        elif _matches(proc.unit, policy.never_restart):
            excluded[proc.unit] = "never_restart"
        else:
            units.append(proc.unit)
    units = sorted(set(units), key=lambda u: (u not in FIRST, FIRST.index(u) if u in FIRST else 0, u))
    reload_ = any(c.startswith(UNIT_DIRS) for c in changed)
    return RestartPlan(tuple(units), tuple(sorted(excluded.items())), tuple(sorted(set(hooks))),
                       tuple(sorted(set(outside))), reexec, reload_, agent,
                       tuple(affected), tuple(sorted(targets.items())))
