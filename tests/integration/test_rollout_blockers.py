"""A stage's blockers, for real: a hook in the sandbox node's
os-refresh-config base (blockers.d) run as a process, and a URL on an HTTP
server on 127.0.0.1. A blocked node waits and says what blocked it; it starts
once the blocker lets it; an untrusted hook is never run."""

import http.server
import os
import threading
import time

import pytest

from update_agent.coordination import rollouts
from update_agent.decide.rollout import policy as policies
from update_agent.decide.rollout.stages import MemberState, NextKind
from update_agent.node.paths import NodePaths
from update_agent.system import System
from update_agent.update import blockers, rollout

HOOK = """#!/bin/sh
if [ -e "%s" ]; then
    echo "the switch stack is in maintenance" >&2
    exit 1
fi
exit 0
"""


def gate(tmp_path, paths, blocker, node="a"):
    p = policies.parse({"stages": [{"name": "web", "group": "web", "blockers": [blocker]}]})
    records = rollouts.for_url("file://%s/engine" % tmp_path, time.time)
    g = rollout.Gate(records, p, node, "web", time.time, 30, 600,
                     blockers.checker(System(), paths))
    g.register("img-A", MemberState.WAITING)
    return g


@pytest.fixture
def paths(tmp_path):
    root = tmp_path / "root"
    root.mkdir(mode=0o755)
    return NodePaths(root=str(root))


def write_hook(paths, flag, mode=0o755):
    d = paths.node(os.path.join(paths.orc_base_node, "blockers.d"))
    os.makedirs(d, mode=0o755)
    hook = os.path.join(d, "no-maintenance")
    with open(hook, "w") as f:
        f.write(HOOK % flag)
    os.chmod(hook, mode)
    return hook


def test_a_hook_blocker_holds_the_node_until_it_exits_0(tmp_path, paths):
    flag = tmp_path / "maintenance"
    flag.touch()
    write_hook(paths, flag)
    g = gate(tmp_path, paths, {"hook": "no-maintenance"})
    waiting = g.enter("img-B")
    assert waiting.kind == NextKind.WAIT
    assert waiting.reason == ("stage web: blocker hook no-maintenance says wait (exit 1): "
                              "the switch stack is in maintenance")
    assert g.records.stage(policies.rollout_id("img-B"), 0) is None, "no step was taken"
    flag.unlink()
    assert isinstance(g.enter("img-B"), rollout.Turn)


def test_an_untrusted_hook_is_not_run(tmp_path, paths):
    ran = tmp_path / "ran"
    hook = write_hook(paths, tmp_path / "absent", mode=0o777)  # anyone may rewrite it
    with open(hook, "w") as f:
        f.write("#!/bin/sh\ntouch %s\nexit 0\n" % ran)
    waiting = gate(tmp_path, paths, {"hook": "no-maintenance"}).enter("img-B")
    assert waiting.kind == NextKind.WAIT and "is not trusted" in waiting.reason
    assert not ran.exists()


def test_a_url_blocker_lets_the_node_start_only_once_it_answers_200(tmp_path, paths):
    answers = [503]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(answers[0])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = "http://127.0.0.1:%d/ok" % server.server_address[1]
        g = gate(tmp_path, paths, {"url": url})
        waiting = g.enter("img-B")
        assert waiting.kind == NextKind.WAIT
        assert waiting.reason == "stage web: blocker %s answers 503, not 200" % url
        answers[0] = 200
        assert isinstance(g.enter("img-B"), rollout.Turn)
    finally:
        server.shutdown()
        server.server_close()
