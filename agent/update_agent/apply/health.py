"""Health checks after an apply: is the node as healthy as before?

Three checks, each optional:
  * the node's health.d hooks (in the os-refresh-config base dir, run by the
    agent only), each phase under hook_timeout;
  * systemd's failed units, compared with before the update (only units that
    failed because of it count; only where systemd runs this root);
  * HTTP probe URLs from the config, retried until health_timeout.
"""

import http.client
import logging
import time
import urllib.error
import urllib.request

from update_agent.apply import hooks, live
from update_agent.errors import AgentError

LOG = logging.getLogger(__name__)

PHASE = "health"


def failed_units(system, paths):
    """The set of failed units, or None where systemd does not run this root."""
    if not live.systemd_manages(paths):
        return None
    r = system.run([system.which("systemctl"), "--failed", "--no-legend", "--plain"], check=False)
    return {line.split()[0] for line in (r.stdout or "").splitlines() if line.strip()}


def _probe(opener, url, timeout):
    try:
        with opener.open(urllib.request.Request(url), timeout=min(timeout, 10)) as resp:
            resp.read(65536)
            return ""
    except urllib.error.HTTPError as e:
        return "HTTP %d" % e.code
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        return str(getattr(e, "reason", e)) or type(e).__name__


def check(system, paths, health_config, env, before, sleep=time.sleep, monotonic=time.monotonic):
    """The problems found (empty: healthy). health_config: the [health] section."""
    problems = []
    timeout = health_config.timeout
    try:
        hooks.run_phase(system, paths, PHASE, env, timeout)
    except AgentError as e:
        problems.append(str(e))
    deadline = monotonic() + timeout
    pending = list(health_config.urls)
    while pending:
        failing = [(url, _probe(system.http, url, timeout)) for url in pending]
        pending = [url for url, why in failing if why]
        if not pending or monotonic() >= deadline:
            problems += ["probe %s: %s" % (url, why) for url, why in failing if why]
            break
        sleep(1)
    if before is not None:
        after = failed_units(system, paths) or set()
        new = sorted(after - before)
        if new:
            problems.append("units failed after the update: %s" % ", ".join(new))
    for p in problems:
        LOG.error("health: %s", p)
    return problems
