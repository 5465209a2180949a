"""daemon: backoff, run_deployment and the Daemon's decisions, with fake collaborators."""

import json
import logging
import os
import types

import pytest

from update_agent.daemon import loop as daemon
from update_agent.sources import heat
from update_agent.state import journal
from update_agent.state.store import Store
from update_agent.config import AgentConfig, Config, DaemonConfig
from update_agent.errors import AgentError
from update_agent.update.agent import Outcome
from update_agent.update.planner import Planner

CONFIG = Config(agent=AgentConfig(image_url_template="https://images/{image_id}.qcow2"),
                daemon=DaemonConfig(poll_interval=30))
TEMPLATE = CONFIG.agent.image_url_template


def dep(dep_id, ident="1", image_id="img-2", **extra):
    inputs = {"image_id": image_id, "update_identifier": ident, **extra}
    return {"group": "update-agent", "id": dep_id, "name": dep_id,
            "inputs": [{"name": k, "value": v} for k, v in inputs.items()]}


class FakeAgent:
    def __init__(self, state_dir):
        self.config = CONFIG
        self.state = Store(str(state_dir))
        self.planner = Planner(None, CONFIG, None, self.state.journal, self.state.records, None, None)
        self.images = types.SimpleNamespace(staged_bytes=lambda: 0)
        self.calls = []
        self.result, self.error = "success", ""

    def update(self, want, should_stop=None, status=None):
        self.calls.append(want.image_id)
        return Outcome(want.image_id, self.result, error=self.error, exit_code=0 if self.error == "" else 1)


class FakeWatch:
    splayed = False

    def __init__(self):
        self.results = []

    def read(self):
        r = self.results.pop(0)
        if isinstance(r, Exception):
            raise r
        return r


class FakeNotifier:
    def __init__(self):
        self.statuses = []

    def status(self, text):
        self.statuses.append(text)


class RecordingSignaller:
    def __init__(self):
        self.sent = []
        self.fail = None

    def send(self, d, body):
        if self.fail:
            raise self.fail
        self.sent.append((d.key, body))
        return True


@pytest.fixture
def env(tmp_path):
    agent = FakeAgent(tmp_path / "state")
    sig = RecordingSignaller()
    d = daemon.Daemon(agent, FakeWatch(), FakeNotifier(), sig, clock=lambda: 1000.0)
    return types.SimpleNamespace(agent=agent, signaller=sig, daemon=d, watch=d.watch, notifier=d.notifier)


# --- backoff ----------------------------------------------------------------

@pytest.mark.parametrize("failures,expected", [(0, 30.0), (-1, 30.0), (1, 2.0), (2, 4.0), (3, 8.0),
                                               (4, 16.0), (5, 30.0), (50, 30.0)])
def test_backoff(failures, expected):
    assert daemon.backoff(failures, 30) == expected


# --- run_deployment ---------------------------------------------------------

def fake_update(result, error=""):
    calls = []

    def update(want):
        calls.append(want)
        return Outcome(want.image_id, result, error=error, exit_code=1 if error else 0)
    update.calls = calls
    return update


def test_run_deployment_unset_identifier_does_not_update():
    update = fake_update("success")
    body, record = daemon.run_deployment(heat.Deployment("d1", "d1", {"image_id": "img-2"}), TEMPLATE, update)
    assert record == "unset" and update.calls == []
    assert body["deploy_stdout"] == heat.UNSET_MESSAGE and body["deploy_status_code"] == 0


def test_run_deployment_invalid_inputs_is_an_error_payload():
    update = fake_update("success")
    d = heat.Deployment("d1", "d1", {"image_id": "../etc", "update_identifier": "1"})
    body, record = daemon.run_deployment(d, TEMPLATE, update)
    assert record is None and update.calls == []
    assert body["deploy_status_code"] == 2 and "image_id" in body["deploy_stderr"]


def test_run_deployment_success_and_failure():
    d = heat.Deployment("d1", "d1", {"image_id": "img-2", "update_identifier": "1"})
    update = fake_update("success")
    body, record = daemon.run_deployment(d, TEMPLATE, update)
    assert record == "success" and body["deploy_status_code"] == 0
    assert [w.image_url for w in update.calls] == ["https://images/img-2.qcow2"]
    body, record = daemon.run_deployment(d, TEMPLATE, fake_update("failed", "disk full"))
    assert record is None and body["deploy_status_code"] == 1 and body["deploy_stderr"] == "disk full"


@pytest.mark.parametrize("action", ["CREATE", "delete", "SUSPEND"])
def test_run_deployment_of_an_action_not_configured_is_signalled_done_without_update(action):
    update = fake_update("success")
    d = heat.Deployment("d1", "d1", {"image_id": "img-2", "update_identifier": "1",
                                     "deploy_action": action})
    body, record = daemon.run_deployment(d, TEMPLATE, update, ("UPDATE",))
    assert record == "ignored" and update.calls == []
    assert body["deploy_status_code"] == 0
    assert body["deploy_stdout"] == "not acting on deploy_action %s (deploy_actions = UPDATE)" % action.upper()


@pytest.mark.parametrize("inputs,actions", [
    ({"deploy_action": "UPDATE"}, ("UPDATE",)),
    ({"deploy_action": "CREATE"}, ("CREATE", "UPDATE")),
    ({}, ("UPDATE",)),  # metadata written by hand carries no deploy_action
])
def test_run_deployment_of_a_configured_action_updates(inputs, actions):
    update = fake_update("success")
    d = heat.Deployment("d1", "d1", {"image_id": "img-2", "update_identifier": "1", **inputs})
    body, record = daemon.run_deployment(d, TEMPLATE, update, actions)
    assert record == "success" and [w.image_id for w in update.calls] == ["img-2"]


# --- Daemon -----------------------------------------------------------------

def test_hold_prevents_update(env):
    env.agent.state.flags.set_hold("maintenance", 1.0)
    assert env.daemon.handle({"deployments": [dep("a")]}) is True
    assert env.agent.calls == [] and env.signaller.sent == []
    assert env.notifier.statuses[-1] == "held: maintenance"


def test_each_new_deployment_updated_once(env):
    md = {"deployments": [dep("a", image_id="img-2"), dep("b", image_id="img-3"),
                          {"group": "script", "id": "other"}]}
    assert env.daemon.handle(md) is True
    assert env.agent.calls == ["img-2", "img-3"]
    done = env.agent.state.flags.deployments_done()
    assert set(done) == {"a/1", "b/1"} and done["a/1"]["result"] == "success"
    assert env.daemon.handle(md) is True
    assert env.agent.calls == ["img-2", "img-3"] and len(env.signaller.sent) == 2
    # a new update_identifier is a new deployment
    env.daemon.handle({"deployments": [dep("a", ident="2", image_id="img-4")]})
    assert env.agent.calls[-1] == "img-4"


def test_a_create_deployment_is_signalled_recorded_and_logged_once(env, caplog):
    md = {"deployments": [dep("a", deploy_action="CREATE")]}
    with caplog.at_level(logging.INFO, logger="update_agent.daemon.loop"):
        assert env.daemon.handle(md) is True
        assert env.daemon.handle(md) is True
    assert env.agent.calls == []
    assert [b["deploy_status_code"] for _, b in env.signaller.sent] == [0]
    assert env.agent.state.flags.deployments_done()["a/1"]["result"] == "ignored"
    said = [r.getMessage() for r in caplog.records if "deploy_action" in r.getMessage()]
    assert said == ["deployment a: not acting on deploy_action CREATE (deploy_actions = UPDATE)"]
    # the stack update that follows is acted on
    assert env.daemon.handle({"deployments": [dep("a", ident="2", deploy_action="UPDATE")]}) is True
    assert env.agent.calls == ["img-2"]


def test_deployment_recorded_on_disk_is_not_redone(env, tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "deployments.json").write_text(json.dumps({"a/1": {"result": "success"}}))
    assert env.daemon.handle({"deployments": [dep("a"), dep("b", image_id="img-3")]}) is True
    assert env.agent.calls == ["img-3"]


def test_failed_deployment_signalled_once_but_retried(env):
    env.agent.result, env.agent.error = "failed", "disk full"
    md = {"deployments": [dep("a")]}
    assert env.daemon.handle(md) is False
    assert env.daemon.handle(md) is False
    assert env.agent.calls == ["img-2", "img-2"]
    assert len(env.signaller.sent) == 1 and env.signaller.sent[0][1]["deploy_stderr"] == "disk full"
    assert env.agent.state.flags.deployments_done() == {}
    env.agent.error = "another error"
    env.daemon.handle(md)
    assert len(env.signaller.sent) == 2
    env.agent.result, env.agent.error = "success", ""
    assert env.daemon.handle(md) is True
    assert len(env.signaller.sent) == 3 and "a/1" in env.agent.state.flags.deployments_done()


def test_success_not_recorded_when_signal_fails(env):
    env.signaller.fail = AgentError("heat down")
    assert env.daemon.handle({"deployments": [dep("a")]}) is False
    assert env.agent.state.flags.deployments_done() == {}


def test_top_level_image_id_without_deployments(env):
    assert env.daemon.handle({"image_id": "img-9"}) is True
    assert env.agent.calls == ["img-9"]
    assert env.agent.state.flags.load_status()["desired"]["image_id"] == "img-9"


def test_tick_counts_failures_and_resets(env):
    env.watch.results = [AgentError("metadata server down"), AgentError("still down"),
                         {"image_id": "img-2"}]
    env.daemon.tick()
    env.daemon.tick()
    assert env.daemon.failures == 2
    assert env.agent.state.flags.load_status()["last_error"] == "still down"
    assert env.notifier.statuses[-1] == "error: still down"
    env.daemon.tick()
    assert env.daemon.failures == 0 and env.agent.calls == ["img-2"]


def test_tick_unchanged_metadata_and_retry_after_failure(env):
    env.agent.result, env.agent.error = "failed", "boom"
    env.watch.results = [{"image_id": "img-2"}, None, None]
    env.daemon.tick()
    assert env.daemon.failures == 1
    env.agent.result, env.agent.error = "success", ""
    env.daemon.tick()  # 304 while failing: the last metadata is tried again
    assert env.daemon.failures == 0 and env.agent.calls == ["img-2", "img-2"]
    env.daemon.tick()  # 304 while healthy: nothing to do
    assert env.agent.calls == ["img-2", "img-2"]


def test_the_same_failure_is_an_error_once_then_quiet_until_it_changes(env, caplog):
    # a refused image is retried every poll interval, forever: an ERROR each time
    # would page someone every 30 s. A new failure, or one after a success, is an ERROR.
    caplog.set_level(logging.INFO, logger="update_agent.daemon.loop")
    env.agent.result, env.agent.error = "refused", "image img-2 is refused: not enough space"
    env.watch.results = [{"image_id": "img-2"}, None, None, AgentError("metadata server down"),
                         {"image_id": "img-2"}, None, {"image_id": "img-2"}]

    def errors_after_tick():
        caplog.clear()
        env.daemon.tick()
        return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors_after_tick() == ["image img-2: refused: image img-2 is refused: not enough space"]
    assert errors_after_tick() == []
    assert [r.getMessage() for r in caplog.records if r.name == "update_agent.daemon.loop"] == [
        "image img-2: refused: image img-2 is refused: not enough space (again)", "will retry in 4s"]
    assert errors_after_tick() == []
    assert errors_after_tick() == ["metadata server down"]
    assert errors_after_tick() == ["image img-2: refused: image img-2 is refused: not enough space"]
    env.agent.result, env.agent.error = "success", ""
    assert errors_after_tick() == []
    env.agent.result, env.agent.error = "refused", "image img-2 is refused: not enough space"
    assert errors_after_tick() == ["image img-2: refused: image img-2 is refused: not enough space"]
    assert env.agent.calls == ["img-2"] * 6


def test_a_no_op_is_said_once_not_at_every_poll(env, caplog):
    # os-collect-config rewrites its cache at every poll: each rewrite is a tick
    caplog.set_level(logging.INFO, logger="update_agent.daemon.loop")
    env.watch.results = [{"image_id": "img-2"}] * 4 + [AgentError("metadata server down"),
                                                       {"image_id": "img-2"}, {"image_id": "img-3"}]
    said = []
    for result in ("success", "noop", "noop", "noop", None, "noop", "noop"):
        env.agent.result = result or "success"
        caplog.clear()
        env.daemon.tick()
        said.append([r.getMessage() for r in caplog.records if r.getMessage().startswith(
            ("image ", "metadata"))])
    assert said == [["image img-2: success"], [], [], [], ["metadata server down"],
                    ["image img-2: noop"], ["image img-3: noop"]]


def test_a_stop_asked_for_is_a_warning_not_an_error(env, caplog):
    env.agent.result, env.agent.error = "interrupted", "stopped before step sync, as asked"
    env.watch.results = [{"image_id": "img-2"}]
    env.daemon.tick()
    assert [(r.levelname, r.getMessage()) for r in caplog.records if "img-2" in r.getMessage()] == [
        ("WARNING", "image img-2: interrupted: stopped before step sync, as asked")]


# --- the start splay ----------------------------------------------------------

class TimedUrlWatch(daemon.UrlWatch):
    """A UrlWatch whose waits are recorded, not slept."""

    def __init__(self, results):
        super().__init__(types.SimpleNamespace(url="http://meta", poll=lambda: results.pop(0)))
        self.waits = []

    def wait(self, timeout, wake_fd):
        self.waits.append(timeout)
        return False


def _first_wait_before_the_first_read(env, journal_status):
    if journal_status:
        j = journal.Journal(image_id="img-2", digest="", previous_image_id="img-1",
                            previous_digest="", action="reboot", root_was_ro=True,
                            started_at=0.0, status=journal_status)
        env.agent.state.journal.save(j)
    watch = TimedUrlWatch([{"image_id": "img-2"}])
    d = daemon.Daemon(env.agent, watch, env.notifier, env.signaller, clock=lambda: 1000.0)
    d.config = DaemonConfig(poll_interval=30, splay=600)
    d._wake_r, w = os.pipe()
    os.set_blocking(d._wake_r, False)
    d.tick = lambda: setattr(d, "stopping", True) or watch.waits.append("read")
    try:
        d._loop(once=False)
    finally:
        os.close(d._wake_r)
        os.close(w)
    return watch.waits[0]


def test_a_fleet_waits_a_random_splay_before_its_first_poll(env):
    first = _first_wait_before_the_first_read(env, None)
    assert first != "read" and 0 <= first <= 600


def test_a_node_back_from_an_update_reboot_finishes_at_once(env):
    """It holds a fleet slot: waiting out the splay keeps the group's slot for nothing."""
    assert _first_wait_before_the_first_read(env, "running") == "read"


def test_damaged_deployments_are_not_redone_and_the_daemon_goes_on(env, tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "deployments.json").write_text('["a/1"]')
    env.watch.results = [{"deployments": [dep("a")]}]
    env.daemon.tick()
    assert env.agent.calls == [] and env.signaller.sent == [] and env.daemon.failures == 1
    assert env.agent.state.flags.load_status()["last_error"].startswith(
        str(tmp_path / "state" / "deployments.json") + ": the file is an array")


def test_a_damaged_hold_holds_the_daemon(env, tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "hold.json").write_text("{")
    assert env.daemon.handle({"image_id": "img-2"}) is True
    assert env.agent.calls == [] and env.notifier.statuses[-1].startswith("held: hold.json is damaged")


def test_a_damaged_image_state_does_not_stop_the_report(env, tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "images.json").write_text("7")
    env.watch.results = [{"image_id": "img-2"}]
    env.daemon.tick()  # the fake update succeeds; the report reads images.json for its metrics
    assert env.agent.state.flags.load_status()["last_result"]["result"] == "success"
