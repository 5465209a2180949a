"""heat: deployments from metadata, their desired image, the signal body, and Signaller
against a real HTTP server on 127.0.0.1."""

import http.server
import json
import threading

import pytest

from update_agent.sources import heat
from update_agent.decide.changes import ChangeSet
from update_agent.errors import AgentError, BadInput
from update_agent.decide.plan import Plan
from update_agent.update.agent import Outcome

DIGEST = "sha256:" + "ab" * 32


# --- deployments ------------------------------------------------------------

def test_deployments_only_our_group_with_inputs_as_dict():
    md = {"deployments": [
        {"group": "script", "id": "s1", "inputs": []},
        {"group": "update-agent", "id": "u1", "name": "upd",
         "inputs": [{"name": "image_id", "value": "img-2"}, {"name": "update_identifier", "value": 7},
                    "junk", {"value": "no name"}]},
        "not a dict",
    ]}
    (d,) = heat.deployments(md)
    assert (d.id, d.name) == ("u1", "upd")
    assert d.inputs == {"image_id": "img-2", "update_identifier": 7}
    assert d.update_identifier == "7" and d.key == "u1/7"


@pytest.mark.parametrize("md", [{}, {"deployments": None}, {"image_id": "x"}, [], "text"])
def test_deployments_missing_list(md):
    assert heat.deployments(md) == []


@pytest.mark.parametrize("md,words", [
    ({"deployments": {"id": "x"}}, ["'deployments'", "list", "dict"]),
    ({"deployments": [{"group": "update-agent"}]}, ["deployments[0]", "'id'"]),
    ({"deployments": [{"group": "update-agent", "id": 5}]}, ["deployments[0]", "5"]),
    ({"deployments": [{"group": "update-agent", "id": "u1", "inputs": {"a": 1}}]},
     ["u1", "'inputs'", "list"]),
])
def test_deployments_bad_shapes(md, words):
    with pytest.raises(BadInput) as e:
        heat.deployments(md)
    for w in words:
        assert w in str(e.value)


def test_desired_from_inputs():
    d = heat.Deployment("u1", "u1", {"image_id": "img-2", "image_digest": DIGEST, "reboot": "never",
                                     "image_url": "", "update_identifier": "1"})
    want = heat.desired(d, "https://images/{image_id}.qcow2")
    assert (want.image_id, want.image_url, want.image_digest, want.reboot) == (
        "img-2", "https://images/img-2.qcow2", DIGEST, "never")


POLICY = {"stages": [{"name": "computes", "group": "compute", "waves": [1, "100%"]}]}


@pytest.mark.parametrize("policy", [POLICY, json.dumps(POLICY)])
def test_desired_carries_the_rollout_policy_and_group_inputs(policy):
    # a Json input arrives as an object, a String one as its text: the same policy
    d = heat.Deployment("u1", "u1", {"image_id": "img-2", "image_digest": DIGEST,
                                     "rollout": policy, "group": "compute"})
    want = heat.desired(d, "https://images/{image_id}.qcow2")
    assert want.group == "compute"
    assert [(s.name, s.group) for s in want.rollout.stages] == [("computes", "compute")]


def test_desired_without_rollout_inputs_has_no_policy():
    d = heat.Deployment("u1", "u1", {"image_id": "img-2", "image_digest": DIGEST,
                                     "rollout": None, "group": ""})
    want = heat.desired(d, "https://images/{image_id}.qcow2")
    assert want.rollout is None and want.group == ""


def test_desired_refuses_a_bad_rollout_input_naming_the_key():
    bad = {"stages": [{"group": "compute", "max_parallel": "150%"}]}
    d = heat.Deployment("u1", "u1", {"image_id": "img-2", "rollout": bad})
    with pytest.raises(BadInput) as e:
        heat.desired(d, "https://images/{image_id}.qcow2")
    assert "update_agent.rollout.stages[0].max_parallel" in str(e.value) and "150%" in str(e.value)


@pytest.mark.parametrize("inputs", [{}, {"image_id": "../x"}, {"image_id": 3}, {"image_id": "a b"},
                                    {"image_id": "img-2", "reboot": "sometimes"}])
def test_desired_rejects_bad_inputs(inputs):
    with pytest.raises(BadInput):
        heat.desired(heat.Deployment("u1", "u1", inputs), "https://images/{image_id}")


# --- payload ----------------------------------------------------------------

def test_payload_of_success():
    plan = Plan("in-place", ("files differ",), "img-2", "img-1",
                changes=ChangeSet(changed=("etc/a",), added=("b", "c"), bytes=42))
    body = heat.payload(Outcome("img-2", "success", plan=plan, duration_s=1.23456))
    assert body["deploy_status_code"] == 0 and body["deploy_stderr"] == ""
    assert "error" not in body  # an error output present, even empty, fails the deployment
    assert body["deploy_stdout"] == "img-2: success (files differ)"
    assert (body["image_id"], body["action"], body["reasons"], body["duration_s"]) == (
        "img-2", "in-place", ["files differ"], 1.235)
    assert body["changes"] == {"changed": 1, "added": 2, "deleted": 0, "touched": 0, "bytes": 42,
                               "kept": []}
    json.dumps(body)


def test_payload_of_failure_uses_exit_code():
    body = heat.payload(Outcome("img-2", "failed", error="rsync failed", exit_code=0))
    assert body["deploy_status_code"] == 1 and body["deploy_stderr"] == "rsync failed"
    # the error_output Heat names in the failed stack's reason
    assert body["error"] == "rsync failed"
    assert heat.payload(Outcome("img-2", "refused", error="x", exit_code=2))["deploy_status_code"] == 2


def test_payload_without_outcome():
    ok = heat.payload(message="nothing")
    assert (ok["deploy_status_code"], ok["deploy_stdout"], ok["action"]) == (0, "nothing", "noop")
    bad = heat.payload(error="bad input")
    assert (bad["deploy_status_code"], bad["deploy_stderr"], bad["action"]) == (2, "bad input", "refuse")
    assert bad["error"] == "bad input" and "error" not in ok


# --- Signaller against a real server ----------------------------------------

class Recorder(http.server.BaseHTTPRequestHandler):
    def _handle(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        srv = self.server
        srv.requests.append((self.command, self.path, self.headers.get("Content-Type"), body))
        code = srv.codes.pop(0) if srv.codes else 200
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_GET = _handle

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    srv.requests, srv.codes = [], []
    t = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    t.start()
    srv.url = "http://127.0.0.1:%d/signal?sig=1" % srv.server_address[1]
    yield srv
    srv.shutdown()
    srv.server_close()


def send(inputs, retries=3, sleeps=None):
    s = heat.Signaller(retries=retries, timeout=5,
                       sleep=sleeps.append if sleeps is not None else (lambda s: None))
    return s.send(heat.Deployment("u1", "u1", inputs), {"deploy_status_code": 0})


@pytest.mark.parametrize("transport,verb", [(None, "POST"), ("CFN_SIGNAL", "POST"),
                                            ("TEMP_URL_SIGNAL", "PUT")])
def test_signal_default_verbs(server, transport, verb):
    inputs = {"deploy_signal_id": server.url}
    if transport:
        inputs["deploy_signal_transport"] = transport
    assert send(inputs) is True
    (req,) = server.requests
    assert req[:3] == (verb, "/signal?sig=1", "application/json")
    assert json.loads(req[3]) == {"deploy_status_code": 0}


def test_signal_explicit_verb(server):
    assert send({"deploy_signal_id": server.url, "deploy_signal_verb": "put"}) is True
    assert server.requests[0][0] == "PUT"
    with pytest.raises(AgentError, match="POST or PUT"):
        send({"deploy_signal_id": server.url, "deploy_signal_verb": "DELETE"})
    assert len(server.requests) == 1


def test_signal_5xx_retried_then_error(server):
    server.codes = [503] * 10
    sleeps = []
    with pytest.raises(AgentError, match="HTTP 503") as e:
        send({"deploy_signal_id": server.url}, retries=2, sleeps=sleeps)
    assert len(server.requests) == 3 and "3 attempts" in str(e.value)
    assert sleeps == [1, 2]


def test_signal_5xx_then_success(server):
    server.codes = [500, 502]
    assert send({"deploy_signal_id": server.url}) is True
    assert len(server.requests) == 3


def test_signal_4xx_not_retried(server):
    server.codes = [403, 200]
    with pytest.raises(AgentError, match="HTTP 403"):
        send({"deploy_signal_id": server.url}, retries=5)
    assert len(server.requests) == 1


def test_no_signal_sends_nothing(server):
    assert send({"deploy_signal_transport": "NO_SIGNAL", "deploy_signal_id": server.url}) is False
    assert send({}) is False
    assert server.requests == []


@pytest.mark.parametrize("transport", ["HEAT_SIGNAL", "ZAQAR_SIGNAL"])
def test_unsupported_transports(server, transport):
    with pytest.raises(AgentError, match="not supported"):
        send({"deploy_signal_transport": transport, "deploy_signal_id": server.url})
    assert server.requests == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "127.0.0.1/x", 42])
def test_non_http_signal_id_refused(url):
    with pytest.raises(AgentError, match="not an http"):
        send({"deploy_signal_transport": "CFN_SIGNAL", "deploy_signal_id": url})


def test_unreachable_server_retried(server):
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    sleeps = []
    with pytest.raises(AgentError, match="after 3 attempts"):
        send({"deploy_signal_id": "http://127.0.0.1:%d/x" % port}, retries=2, sleeps=sleeps)
    assert len(sleeps) == 2
