"""A rollout stage's blockers: asked before a node takes a stage step, never while it
holds one (a blocked holder would keep its place from the nodes that could go)."""

import logging
import os
import posixpath
import urllib.error
import urllib.request

from update_agent.decide.rollout.policy import BlockerKind
from update_agent.errors import AgentError
from update_agent.node import trust

LOG = logging.getLogger(__name__)

TIMEOUT = 30  # seconds a blocker may take to answer


def checker(system, paths):
    """blocked(Blocker) -> why it holds this node back, "" when it does not."""
    def blocked(blocker):
        if blocker.kind == BlockerKind.HOOK:
            return _hook(system, paths, blocker.value)
        return _url(system, blocker.value)
    return blocked


def _hook(system, paths, name):
    node_path = posixpath.join(paths.orc_base_node, "blockers.d", name)
    try:
        host = trust.check(paths.root, node_path, "blocker hook")
    except trust.Untrusted as e:
        return "blocker hook %s is not trusted: %s" % (name, e)
    if not os.path.isfile(host):
        return "blocker hook %s is missing: there is no %s" % (name, node_path)
    if not os.access(host, os.X_OK):
        return "blocker hook %s is not executable: %s" % (name, node_path)
    env = dict(os.environ, UPDATE_AGENT_ROOT=paths.root)
    try:
        done = system.run([host], check=False, env=env, timeout=TIMEOUT, own_group=True)
    except AgentError as e:
        return "blocker hook %s: %s" % (name, e)
    if done.returncode != 0:
        said = (done.stderr or done.stdout or "").strip().splitlines()
        return "blocker hook %s says wait (exit %d)%s" % (name, done.returncode,
                                                         ": " + said[-1] if said else "")
    return ""


def _url(system, url):
    try:
        with system.http.open(urllib.request.Request(url), TIMEOUT) as response:
            status = response.status
    except urllib.error.HTTPError as e:
        status = e.code
    except (urllib.error.URLError, OSError, ValueError) as e:
        return "blocker %s does not answer: %s" % (url, getattr(e, "reason", e))
    return "" if status == 200 else "blocker %s answers %d, not 200" % (url, status)
