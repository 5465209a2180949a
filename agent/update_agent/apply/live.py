"""The live root: keep replaced inodes that are in use alive, and restart what
runs replaced code, so that / can go read-only again.

rsync renames a new file over the old one; a process that maps the old inode
keeps it alive, and Linux refuses remount,ro while an unlinked inode is held.
Before the sync, every in-use inode the sync replaces is hard-linked into a
hidden directory on the root filesystem, so the remount succeeds even for
processes that policy does not restart (dbus, logind, PID 1 without a
re-exec). Those links are dropped at a later update once nothing uses them.
"""

import json
import logging
import os
import time

from update_agent.decide import plan as planning, restarts
from update_agent.errors import AgentError, CommandFailed
from update_agent.node import processes
from update_agent.node.facts import PIN_DIR
from update_agent.state import statecheck, statefile

LOG = logging.getLogger(__name__)

TARGETS_FILE = "replaced-inodes.json"


def pin(root, restart_plan, work_dir, clock=time.time):
    """Hard-link in-use inodes the sync will replace; drop links no longer used."""
    pin_dir = os.path.join(root, PIN_DIR.lstrip("/"))
    # atomic: a crash mid-write must not leave a torn file for the next run's restarts
    statefile.write_atomic(os.path.join(work_dir, TARGETS_FILE), json.dumps(
        {"since": clock(), "targets": [[ino, rel] for ino, rel in restart_plan.targets]}).encode())
    if not restart_plan.targets and not os.path.isdir(pin_dir):
        return 0
    os.makedirs(pin_dir, mode=0o700, exist_ok=True)
    # in use now, not when the plan was made: that may be minutes ago, and processes
    # started since (the agent itself loads modules lazily) map old files too
    in_use = set()
    for proc in processes.scan(root):
        in_use |= proc.inodes
    for name in os.listdir(pin_dir):
        path = os.path.join(pin_dir, name)
        if os.lstat(path).st_ino not in in_use:
            os.unlink(path)  # nothing runs that old code any more
    pinned = 0
    for ino, rel in restart_plan.targets:
        if ino not in in_use:
            continue
        src = os.path.join(root, rel)
        try:
            st = os.lstat(src)
        except FileNotFoundError:
            continue
        dst = os.path.join(pin_dir, str(st.st_ino))
        if st.st_ino == ino and not os.path.lexists(dst):
            os.link(src, dst, follow_symlinks=False)
            pinned += 1
    if not os.listdir(pin_dir):
        os.rmdir(pin_dir)
    LOG.info("pinned %d in-use inodes the sync replaces", pinned)
    return pinned


def old_code(root, work_dir):
    """({inode: path}, since) of the old code still in use after the sync.

    Only pinned inodes count: they stay allocated, while the replaced inodes
    nothing held were freed and their numbers may now belong to new files.
    """
    targets, since = _targets(os.path.join(work_dir, TARGETS_FILE))
    pin_dir = os.path.join(root, PIN_DIR.lstrip("/"))
    pinned = {}
    if os.path.isdir(pin_dir):
        for name in os.listdir(pin_dir):
            ino = os.lstat(os.path.join(pin_dir, name)).st_ino
            pinned[ino] = targets.get(ino, "(replaced by an earlier update)")
    return pinned, since


_PAIR = statecheck.Field((list,), each=statecheck.Field((int, str)))  # [inode, path]
TARGETS = statecheck.Field((dict,), shape={"since": statecheck.Field(statecheck.NUMBER, True),
                                           "targets": statecheck.Field((list,), True, each=_PAIR)})


def _targets(path):
    """({inode: path}, since) the pin step wrote; ({}, None) if absent or damaged: the
    paths then read "(replaced by an earlier update)", and nothing else depends on them."""
    try:
        data = statecheck.load(path, TARGETS, "ignored: the replaced paths are not named")
        if data is None:
            return {}, None
        pairs = [item for item in data["targets"] if len(item) == 2 and isinstance(item[0], int)]
        return {ino: str(rel) for ino, rel in pairs}, float(data["since"])
    except statecheck.DamagedState as e:
        LOG.warning("%s", e)
        return {}, None


def _old(rp):
    """Processes still on old code, the agent itself aside (it says so apart)."""
    return ["%s[%d] %s" % (u or "-", p, why) for p, u, why in rp.affected if p != os.getpid()]


def systemd_manages(paths):
    """Restarts act only on the machine's own systemd, for the root it booted."""
    return paths.is_host_root and os.path.isdir("/run/systemd/system")


def restart(system, paths, restart_config, hook_timeout, plan, work_dir, status=lambda text: None):
    """Restart what runs replaced code; return a summary for the journal and history.

    restart_config: the [restart] section; hook_timeout bounds each systemctl call."""
    procs = processes.scan(paths.root)
    imports = {p.pid: processes.python_imports(p, paths.node) for p in procs}
    pinned, since = old_code(paths.root, work_dir)
    policy = planning.policy(restart_config)
    rp = restarts.decide(procs, plan.changes, pinned, policy, imports, os.getpid(), since)
    acting = restart_config.restart_mode == "auto" and systemd_manages(paths)
    summary = {"acted": acting, "units": list(rp.restart), "daemon_reexec": rp.daemon_reexec,
               "daemon_reload": rp.daemon_reload, "failed": [], "still_old": [],
               "excluded": [u for u, _ in rp.excluded], "left_to_hooks": list(rp.hooks),
               "outside": ["%s[%d]" % (n, p) for p, n, _ in rp.outside], "agent": rp.agent}
    if not acting:
        summary["still_old"] = _old(rp)
        if rp.affected:
            LOG.warning("not restarting (%s): %s", "restart_mode = report"
                        if restart_config.restart_mode != "auto" else "systemd does not run this root",
                        "; ".join("pid %d %s: %s" % a for a in rp.affected))
        return summary
    systemctl = system.which("systemctl")
    if rp.daemon_reexec:
        status("restarting: systemd (daemon-reexec)")
        system.run([systemctl, "daemon-reexec"], timeout=hook_timeout)
        LOG.info("re-executed systemd (PID 1 ran replaced code)")
    if rp.daemon_reload or rp.restart:
        system.run([systemctl, "daemon-reload"], timeout=hook_timeout)
    for unit in rp.restart:
        status("restarting: %s" % unit)
        try:
            system.run([systemctl, "restart", unit], timeout=hook_timeout)
            LOG.info("restarted %s", unit)
        except (CommandFailed, AgentError) as e:
            LOG.error("restart of %s failed: %s", unit, e)
            summary["failed"].append(unit)
    still = restarts.decide(processes.scan(paths.root), plan.changes, pinned, policy, imports,
                            os.getpid(), since)
    summary["still_old"] = _old(still)
    if summary["still_old"]:
        LOG.warning("still running replaced code: %s", "; ".join(summary["still_old"]))
    if summary["failed"]:
        raise AgentError("restart failed for %s (the update is on disk; see journalctl -u %s)"
                         % (", ".join(summary["failed"]), summary["failed"][0]))
    return summary


def restart_self(system, paths, restart_config, runs_old_code):
    """The agent is a process too: once an update is done, restart the service if
    the sync replaced its interpreter or libraries (systemd stops this process
    with SIGTERM, between updates). Run by hand, it only says so."""
    if not runs_old_code:
        return False
    unit = planning.policy(restart_config).agent_unit
    if restart_config.restart_mode == "auto" and systemd_manages(paths) \
            and processes.unit_of(os.getpid()) == unit:
        system.run([system.which("systemctl"), "--no-block", "restart", unit])
        LOG.info("update-agent runs replaced code: %s restart queued", unit)
        return True
    LOG.warning("update-agent itself runs code this update replaced; restart it "
                "(systemctl restart %s)", unit)
    return False
