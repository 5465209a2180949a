"""Run os-refresh-config phase directories through dib-run-parts.

The phase directories are the node's own (<root>/usr/libexec/os-refresh-config
or OS_REFRESH_CONFIG_BASE_DIR). Hooks run on this machine with the environment
documented in docs/hooks.md; they find the node under UPDATE_AGENT_ROOT.
Hooks are run only from root-owned directories that nobody else can write to.
"""

import logging
import os
import stat

from update_agent.errors import AgentError, CommandFailed

LOG = logging.getLogger(__name__)

PRE_CONFIGURE = "pre-configure"
CONFIGURE = "configure"
POST_CONFIGURE = "post-configure"
MIGRATION = "migration"
ERROR = "error"


class HookFailed(AgentError):
    pass


class HookRefused(HookFailed):
    """The phase was not run at all: its files could be written by others."""


def _check_trusted(path):
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        # a link's own mode is always 777: judge its owner, then what it points to
        if st.st_uid != 0:
            raise HookRefused("refusing hooks: symlink %s is owned by uid %d, not root"
                              % (path, st.st_uid))
        st = os.stat(path)
    if st.st_uid != 0:
        raise HookRefused("refusing hooks: %s is owned by uid %d, not root" % (path, st.st_uid))
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise HookRefused("refusing hooks: %s is writable by group or others (mode %o)"
                         % (path, stat.S_IMODE(st.st_mode)))


def check_phase_dir(directory, root="/"):
    """Refuse hooks that anyone but root could have changed: every directory from
    the root down to the phase dir, the phase dir's scripts, and the
    environment.d files dib-run-parts sources before running them."""
    root = os.path.realpath(root)
    path = os.path.realpath(directory)
    chain = []
    while True:
        chain.append(path)
        if path == root or path == "/":
            break
        path = os.path.dirname(path)
    for d in reversed(chain):
        _check_trusted(d)
    for name in sorted(os.listdir(directory)):
        _check_trusted(os.path.join(directory, name))
    env_dir = os.path.join(os.path.dirname(directory), "environment.d")
    if os.path.isdir(env_dir):
        _check_trusted(env_dir)
        for name in sorted(os.listdir(env_dir)):
            _check_trusted(os.path.join(env_dir, name))


def hook_env(paths, image_id, previous_image_id, action, extra=None):
    env = dict(os.environ)
    env.update({
        "UPDATE_AGENT_ROOT": paths.root,
        # where hooks remember what to undo: on the state filesystem, so that an undo
        # after a reboot (the reboot path's post-configure) still finds it; /run does not
        "UPDATE_AGENT_HOOK_STATE": os.path.join(paths.state_dir, "hooks"),
        "UPDATE_AGENT_IMAGE_ID": image_id,
        "UPDATE_AGENT_PREVIOUS_IMAGE_ID": previous_image_id or "",
        "UPDATE_AGENT_ACTION": action,
    })
    env.update(extra or {})
    return env


def run_phase(system, paths, phase, env, timeout):
    """Run one phase; return True if it ran, False if the node has no such dir."""
    directory = paths.orc_phase_dir(phase)
    if not os.path.isdir(directory):
        LOG.info("hooks: no %s.d on the node, skipped", phase)
        return False
    check_phase_dir(directory, paths.root)
    LOG.info("hooks: running %s", directory)
    try:
        result = system.run([system.which("dib-run-parts"), directory], env=env, timeout=timeout,
                            own_group=True)
    except CommandFailed as e:
        raise HookFailed("%s.d hook failed (exit %s): %s"
                         % (phase, e.returncode, _last_line(e.stderr)))
    except AgentError as e:
        raise HookFailed("%s.d: %s" % (phase, e))
    for line in (result.stdout or "").splitlines():
        LOG.info("%s.d: %s", phase, line)
    return True


def _last_line(text):
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"
