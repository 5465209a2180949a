"""The daemon's heartbeat thread and an update share Agent.gate: the heartbeat's
idle member record must never take the place of the gate an update made."""

import dataclasses

from fakes import FakeSystem
from update_agent.config import Config, CoordinationConfig
from update_agent.node.paths import NodePaths
from update_agent.update import agent as agent_mod, fleet as fleet_mod


class Records:
    def __init__(self):
        self.registered = []

    def register(self, group, node, record, ttl):
        self.registered.append((group, node, record["state"]))


def make_agent(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    config = dataclasses.replace(Config(), coordination=CoordinationConfig(
        backend="file://%s" % (tmp_path / "engine"), group="compute", node_id="n1"))
    return agent_mod.Agent(NodePaths(str(root)), config, FakeSystem(now=100.0),
                           read_mounts=lambda: [])


def test_an_idle_heartbeat_registers_the_node_in_its_configured_group(tmp_path, monkeypatch):
    agent, records = make_agent(tmp_path), Records()
    monkeypatch.setattr(fleet_mod.rollouts, "for_url", lambda url, clock: records)
    agent.beat()
    assert records.registered == [("compute", "n1", "idle")]
    assert agent.fleet.gate.policy is None


def test_the_gate_an_update_made_meanwhile_outlives_the_heartbeats_idle_one(tmp_path, monkeypatch):
    agent, records = make_agent(tmp_path), Records()
    update_gate = object()

    def for_url(url, clock):
        agent.fleet.gate = update_gate  # an update made its gate while the heartbeat built its own
        return records
    monkeypatch.setattr(fleet_mod.rollouts, "for_url", for_url)
    agent.beat()
    assert agent.fleet.gate is update_gate
    assert records.registered == [], "no idle record over the update's member record"
