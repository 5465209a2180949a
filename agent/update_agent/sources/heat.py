"""Heat software deployments of group `update-agent`, and their signals.

The daemon owns these deployments itself rather than through a heat-config
hook: heat-config runs hooks inside os-refresh-config's configure phase (under
its lock) and marks a deployment deployed before running it, so a failed
update would never be retried. Here success is recorded only after success.
"""

import dataclasses
import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request

from update_agent.decide.actions import Action
from update_agent.errors import AgentError, BadInput
from update_agent.http import Http
from update_agent.sources import desired as desired_mod

LOG = logging.getLogger(__name__)

GROUP = "update-agent"
UNSET_MESSAGE = "Not running due to unset update_identifier"
# deployment inputs that become update_agent.<input> of the desired image
DESIRED_INPUTS = ("image_url", "image_digest", "image_signature", "reboot", "rollout", "group")


@dataclasses.dataclass(frozen=True)
class Deployment:
    id: str
    name: str
    inputs: dict

    @property
    def update_identifier(self):
        value = self.inputs.get("update_identifier")
        return "" if value is None else str(value)

    @property
    def action(self):
        """Heat's deploy_action input; "" where the metadata carries none."""
        value = self.inputs.get("deploy_action")
        return "" if value is None else str(value).upper()

    @property
    def key(self):
        return "%s/%s" % (self.id, self.update_identifier)


def deployments(metadata):
    """The deployments of our group in the metadata's `deployments` list."""
    items = metadata.get("deployments") if isinstance(metadata, dict) else None
    if items is None:
        return []
    if not isinstance(items, list):
        raise BadInput("metadata key 'deployments' must be a list, got %s" % type(items).__name__)
    out = []
    for i, d in enumerate(items):
        if not isinstance(d, dict) or d.get("group") != GROUP:
            continue
        dep_id = d.get("id")
        if not isinstance(dep_id, str) or not dep_id:
            raise BadInput("deployments[%d] of group %s has no valid 'id': %r" % (i, GROUP, dep_id))
        inputs = d.get("inputs") or []
        if not isinstance(inputs, list):
            raise BadInput("deployment %s: 'inputs' must be a list" % dep_id)
        values = {}
        for item in inputs:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                values[item["name"]] = item.get("value")
        out.append(Deployment(dep_id, str(d.get("name") or dep_id), values))
    return out


def ignored_because(deployment, actions):
    """Why a deployment gets no update, or "": its deploy_action is not one the
    config acts on. A stack CREATE runs it on a node that booted the image it
    names, and a DELETE or SUSPEND is no ask for a new image."""
    if not deployment.action or deployment.action in actions:
        return ""
    return "not acting on deploy_action %s (deploy_actions = %s)" % (
        deployment.action, ", ".join(actions))


def desired(deployment, url_template=""):
    """The image a deployment asks for, validated like top-level metadata. Its
    inputs `rollout` and `group` are the metadata's update_agent.rollout and
    update_agent.group: a template carries the fleet's policy next to image_id."""
    i = deployment.inputs
    opts = {k: i.get(k) for k in DESIRED_INPUTS if i.get(k) not in (None, "")}
    return desired_mod.from_metadata({"image_id": i.get("image_id"), "update_agent": opts},
                                     url_template)


def payload(outcome=None, message="", error=""):
    """The signal JSON: deploy_stdout/stderr/status_code plus our outputs."""
    if outcome is None:
        return _with_error({"deploy_stdout": message, "deploy_stderr": error,
                            "deploy_status_code": 2 if error else 0,
                            "image_id": "", "action": Action.NOOP if not error else Action.REFUSE,
                            "reasons": [message or error], "duration_s": 0, "changes": {}})
    d = outcome.to_dict()
    changes = dict(d.get("changes") or {})
    changes.pop("sample", None)
    stdout = "%s: %s (%s)" % (outcome.image_id, outcome.result, "; ".join(d.get("reasons", [])))
    return _with_error({"deploy_stdout": stdout, "deploy_stderr": outcome.error,
                        "deploy_status_code": 0 if outcome.ok else (outcome.exit_code or 1),
                        "image_id": outcome.image_id, "action": d.get("action", ""),
                        "reasons": d.get("reasons", []), "duration_s": d["duration_s"],
                        "changes": changes, "result": outcome.result})


def _with_error(body):
    """A failure also carries the output `error` (error_output in the config): Heat puts
    an error output in the failed stack's reason, but never deploy_stderr. Only then: an
    error output present, even empty, fails the deployment."""
    if body["deploy_status_code"] != 0:
        body["error"] = (body["deploy_stderr"] or "update-agent failed").splitlines()[0]
    return body


class Signaller:
    """Send a deployment's result where Heat waits for it, retrying 5xx."""

    def __init__(self, opener=None, retries=5, timeout=30, sleep=time.sleep):
        self.opener = opener or Http()
        self.retries = retries
        self.timeout = timeout
        self.sleep = sleep

    def send(self, deployment, body):
        i = deployment.inputs
        transport = i.get("deploy_signal_transport") or ("CFN_SIGNAL" if i.get("deploy_signal_id") else "NO_SIGNAL")
        if transport == "NO_SIGNAL":
            LOG.info("deployment %s: NO_SIGNAL, nothing to send", deployment.id)
            return False
        if transport not in ("CFN_SIGNAL", "TEMP_URL_SIGNAL"):
            raise AgentError("deployment %s: signal transport %s is not supported (use "
                             "CFN_SIGNAL, TEMP_URL_SIGNAL or NO_SIGNAL)" % (deployment.id, transport))
        url = i.get("deploy_signal_id")
        if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise AgentError("deployment %s: deploy_signal_id %r is not an http(s) URL"
                             % (deployment.id, url))
        verb = str(i.get("deploy_signal_verb") or ("PUT" if transport == "TEMP_URL_SIGNAL" else "POST")).upper()
        if verb not in ("POST", "PUT"):
            raise AgentError("deployment %s: deploy_signal_verb %r must be POST or PUT"
                             % (deployment.id, verb))
        data = json.dumps(body).encode()
        last = ""
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(url, data=data, method=verb,
                                         headers={"Content-Type": "application/json"})
            try:
                with self.opener.open(req, timeout=self.timeout) as resp:
                    resp.read()
                LOG.info("deployment %s: signalled %s (%s)", deployment.id, verb, resp.status)
                return True
            except urllib.error.HTTPError as e:
                last = "HTTP %d" % e.code
                if e.code < 500:
                    break  # Heat said no: retrying will not change its mind
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                last = str(getattr(e, "reason", e)) or type(e).__name__
            if attempt < self.retries:
                self.sleep(min(60, 2 ** attempt))
        raise AgentError("deployment %s: signal to Heat failed after %d attempts: %s"
                         % (deployment.id, attempt + 1, last))
