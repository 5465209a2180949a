"""A FleetLock client (Zincati/airlock's protocol), for fleets that run airlock.

POST {base}/v1/pre-reboot takes a slot, POST {base}/v1/steady-state releases
it; header `fleet-lock-protocol: true`; body {"client_params": {"id", "group"}};
200 means yes. Both calls are idempotent on the server.
"""

import contextlib
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request

from update_agent.errors import AgentError, Interrupted
from update_agent.http import Http

LOG = logging.getLogger(__name__)


def is_server(url):
    """A FleetLock base URL: a plain http(s):// backend."""
    return urllib.parse.urlsplit(url).scheme in ("http", "https")


class Client:
    def __init__(self, base, group, node, opener=None, timeout=10):
        self.base, self.group, self.node = base.rstrip("/"), group, node
        self.opener = opener or Http()
        self.timeout = timeout

    def _post(self, path):
        body = json.dumps({"client_params": {"id": self.node, "group": self.group}}).encode()
        req = urllib.request.Request(self.base + path, data=body, method="POST", headers={
            "fleet-lock-protocol": "true", "Content-Type": "application/json"})
        try:
            with self.opener.open(req, timeout=self.timeout) as resp:
                resp.read()
                return True, "FleetLock %s: granted" % path
        except urllib.error.HTTPError as e:
            try:
                err = json.loads(e.read() or b"{}")
                why = "%s: %s" % (err.get("kind", "error"), err.get("value", ""))
            except ValueError:
                why = "HTTP %d" % e.code
            return False, "FleetLock %s refused (%s)" % (path, why)
        except (urllib.error.URLError, OSError) as e:
            raise AgentError("FleetLock server %s unreachable: %s" % (self.base, getattr(e, "reason", e)))

    def take(self):
        return self._post("/v1/pre-reboot")

    def release(self):
        ok, why = self._post("/v1/steady-state")
        if not ok:
            raise AgentError(why)

    def failed(self):
        LOG.info("FleetLock keeps no failure count: the server's policy decides")

    def clear(self):
        LOG.info("FleetLock keeps no failure count: nothing to clear")


@contextlib.contextmanager
def held(client, timeout, poll=5.0, sleep=time.sleep, monotonic=time.monotonic, should_stop=None):
    deadline = monotonic() + timeout
    while True:
        granted, why = client.take()
        if granted:
            break
        if should_stop and should_stop():
            raise Interrupted("stopped while waiting for a slot in group %s, as asked; "
                              "nothing was changed" % client.group)
        if monotonic() >= deadline:
            raise AgentError("no slot in group %s after %ds: %s" % (client.group, timeout, why))
        sleep(poll)
    try:
        yield why
    finally:
        client.release()
