"""Run os-refresh-config phase directories through dib-run-parts.

The phase directories are the node's own (<root>/usr/libexec/os-refresh-config
or OS_REFRESH_CONFIG_BASE_DIR). Hooks run on this machine with the environment
documented in docs/hooks.md; they find the node under UPDATE_AGENT_ROOT.
Hooks are run only if trust.py trusts them: root-owned, from the root down,
and written by nobody else.
"""

import logging
import os
import posixpath

from update_agent.errors import AgentError, CommandFailed
from update_agent.node import trust

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


PHASES = (PRE_CONFIGURE, CONFIGURE, POST_CONFIGURE, MIGRATION, ERROR)


def check_phase_dir(paths, phase):
    """Refuse hooks that anyone but root could have changed (trust.Untrusted): the
    phase dir and every directory above it, each of its scripts (a link's target
    too), and the environment.d files dib-run-parts sources before running them.
    Return the phase dir's host path, None if the node has no such dir."""
    node_dir = posixpath.join(paths.orc_base_node, phase + ".d")
    directory = trust.check(paths.root, node_dir, "%s hooks" % phase, missing_ok=True)
    if not os.path.isdir(directory):
        return None
    env_node = posixpath.join(node_dir, "..", "environment.d")
    env_dir = trust.check(paths.root, env_node, "hook environment", missing_ok=True)
    for node, host, what in ((node_dir, directory, "hook"), (env_node, env_dir, "hook environment")):
        for name in sorted(os.listdir(host)) if os.path.isdir(host) else ():
            judged = trust.check(paths.root, posixpath.join(node, name), what)
            trust.same_on_host(os.path.join(host, name), judged, what)
    return directory


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
    try:
        directory = check_phase_dir(paths, phase)
    except trust.Untrusted as e:
        raise HookRefused(str(e))
    if directory is None:
        LOG.info("hooks: no %s.d on the node, skipped", phase)
        return False
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
