"""The example Heat templates in docs/heat, rendered into the metadata Heat gives a
server, drive a real update and get every declared output back in the signal; the
two rollout examples keep Heat's batches and the agent's stages apart, and an
agent-driven deployment is signalled only once the node is done with the rollout."""

import contextlib
import os
import uuid

import pytest
import yaml

import etcd_local
import world
from daemon_helpers import HeatServer
from world import agent
from update_agent.decide.rollout import policy as rollout_policy

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]

HEAT_DIR = os.path.join(world.PROJECT, "docs", "heat")


def load(name):
    with open(os.path.join(HEAT_DIR, name)) as f:
        return yaml.safe_load(f)


def resolve(value, params):
    """The functions the example templates use in input values: get_param, list_join."""
    if isinstance(value, dict) and set(value) == {"get_param"}:
        return params[value["get_param"]]
    if isinstance(value, dict) and set(value) == {"list_join"}:
        sep, items = value["list_join"]
        return sep.join(str(resolve(i, params)) for i in items)
    return value


def render_deployment(params, signal_url):
    """What Heat puts in the server's metadata for server-update.yaml's deployment."""
    config = load("update-agent-config.yaml")["resources"]["config"]["properties"]
    deployment = load("server-update.yaml")["resources"]["update"]["properties"]
    return render(config, deployment, params, signal_url)


def render(config, deployment, params, signal_url):
    """What Heat puts in a server's metadata for a deployment of config: every declared
    input with its value (or default), then Heat's own deploy_* inputs."""
    given = {k: resolve(v, params) for k, v in deployment["input_values"].items()}
    inputs = [{"name": i["name"], "value": given.get(i["name"], i.get("default")),
               "type": "String", "description": i.get("description", "")}
              for i in config["inputs"]]
    inputs += [{"name": k, "value": v} for k, v in (
        ("deploy_server_id", str(uuid.uuid4())), ("deploy_action", "UPDATE"),
        ("deploy_stack_id", "stack/%s" % uuid.uuid4()), ("deploy_resource_name", "update"),
        ("deploy_signal_transport", deployment["signal_transport"]),
        ("deploy_signal_id", signal_url), ("deploy_signal_verb", "POST"))]
    return {"id": str(uuid.uuid4()), "name": "update", "group": config["group"], "config": "",
            "inputs": inputs, "outputs": config["outputs"], "options": {}}


def test_templates_are_consistent():
    config = load("update-agent-config.yaml")["resources"]["config"]["properties"]
    assert config["group"] == "update-agent"
    names = {i["name"] for i in config["inputs"]}
    assert names == {"image_id", "image_url", "image_digest", "update_identifier", "reboot"}
    server = load("server-update.yaml")
    update = server["resources"]["update"]["properties"]
    assert update["actions"] == ["UPDATE"]
    assert update["input_values"]["update_identifier"] == {"get_param": "update_identifier"}
    assert set(update["input_values"]) <= names
    group = load("rolling-group.yaml")["resources"]["servers"]
    assert group["update_policy"]["rolling_update"]["max_batch_size"] == 1
    assert group["properties"]["resource_def"]["type"] == "server-update.yaml"


def test_rendered_deployment_updates_the_node_and_returns_every_output(tmp_path, need_mounts):
    w = world.World(str(tmp_path / "world"))
    heat = HeatServer()
    n = w.node(str(tmp_path), occ_mount=True)
    try:
        params = {"image_id": "img-B", "image_url": world.offered(tmp_path, w.image_b),
                  "image_digest": world.sha256(w.image_b), "update_identifier": "1732320000"}
        d = render_deployment(params, heat.url + "/signal")
        n.write_occ_cache({"heat_local.json": {"deployments": [d]}})
        conf = tmp_path / "a.conf"
        conf.write_text("[daemon]\npoll_interval = 60\n")
        r = agent(n.root, "run", "--once", config=str(conf))
        assert r.returncode == 0, r.stderr
        (_, _, body), = heat.signals
        assert body["deploy_status_code"] == 0, body
        declared = {o["name"] for o in d["outputs"] if not o.get("error_output")}
        assert declared <= set(body), "every output the config declares is signalled"
        assert "error" not in body, "an error output, even empty, would fail the deployment"
        assert body["image_id"] == "img-B" and body["action"] == "in-place"
        assert open(os.path.join(n.root, "etc/image_id")).read() == "img-B\n"
    finally:
        heat.close()
        n.stop()


# --- Heat-driven batches and agent-driven stages ---------------------------------

def walk_keys(value):
    """Every mapping key anywhere in a template."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from walk_keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk_keys(v)


def of_type(template, kind):
    return {name: r for name, r in template["resources"].items() if r["type"] == kind}


def server_groups(template):
    """ResourceGroups of servers that can take software deployments."""
    groups = of_type(template, "OS::Heat::ResourceGroup")
    for g in groups.values():
        server = g["properties"]["resource_def"]
        assert server["type"] == "OS::Nova::Server"
        assert server["properties"]["user_data_format"] == "SOFTWARE_CONFIG"
    return groups


def deployment_groups(template):
    """Each OS::Heat::SoftwareDeploymentGroup with the ResourceGroup it deploys to."""
    groups = server_groups(template)
    out = {}
    for name, d in of_type(template, "OS::Heat::SoftwareDeploymentGroup").items():
        servers = d["properties"]["servers"]["get_attr"]
        assert servers[1] == "refs_map" and servers[0] in groups, (name, servers)
        out[name] = (d, servers[0])
    return out


def test_heat_driven_batches_are_heat_rolling_updates_without_a_rollout_policy():
    t = load("heat-driven-batches.yaml")
    assert t["heat_template_version"] == load("server-update.yaml")["heat_template_version"]
    assert t["resources"]["update_config"]["type"] == "update-agent-config.yaml"
    config = load("update-agent-config.yaml")["resources"]["config"]["properties"]
    (d, _), = deployment_groups(t).values()
    rolling = d["update_policy"]["rolling_update"]
    # the keys Heat's SoftwareDeploymentGroup takes in a rolling_update
    assert set(rolling) <= {"max_batch_size", "pause_time"}
    assert isinstance(rolling["max_batch_size"], int) and rolling["max_batch_size"] >= 1
    props = d["properties"]
    assert props["actions"] == ["UPDATE"] and props["signal_transport"] == "CFN_SIGNAL"
    assert props["config"] == {"get_attr": ["update_config", "config_id"]}
    inputs = props["input_values"]
    assert set(inputs) <= {i["name"] for i in config["inputs"]}
    assert inputs["update_identifier"] == {"get_param": "update_identifier"}
    assert inputs["image_id"] == {"get_param": "image_id"}
    # Heat alone orders these nodes: nothing that would start an agent rollout
    assert "rollout" not in set(walk_keys(t)) and "group" not in inputs


def agent_driven():
    t = load("agent-driven-stages.yaml")
    return t, t["resources"]["update_config"]["properties"]


def test_agent_driven_stages_have_no_heat_update_policy_and_carry_the_policy():
    t, config = agent_driven()
    assert t["heat_template_version"] == load("server-update.yaml")["heat_template_version"]
    for name, r in t["resources"].items():
        assert "update_policy" not in r, "%s: Heat must not batch what the agents order" % name
    ours = load("update-agent-config.yaml")["resources"]["config"]["properties"]
    assert config["group"] == ours["group"]
    declared = {i["name"]: i for i in config["inputs"]}
    assert set(declared) == {i["name"] for i in ours["inputs"]} | {"rollout", "group"}
    assert declared["rollout"]["type"] == "Json"
    assert config["outputs"] == ours["outputs"]
    assert "default" not in t["parameters"]["image_id"]
    roles = set()
    for name, (d, servers) in deployment_groups(t).items():
        props = d["properties"]
        assert props["actions"] == ["UPDATE"] and props["signal_transport"] == "CFN_SIGNAL"
        assert props["config"] == {"get_resource": "update_config"}
        inputs = props["input_values"]
        assert set(inputs) <= set(declared), name
        assert inputs["rollout"] == {"get_param": "rollout"}
        assert inputs["image_id"] == {"get_param": "image_id"}
        # a new image_id alone is a new update_identifier: one parameter starts it all
        assert {"get_param": "image_id"} in inputs["update_identifier"]["list_join"][1]
        # each role's deployments name that role's group, and only its servers get them
        assert servers == inputs["group"] + "s", (name, servers)
        roles.add(inputs["group"])
    assert roles == {"controller", "conductor", "compute"}


def test_agent_driven_policy_parses_and_names_the_template_groups():
    t, _ = agent_driven()
    policy = rollout_policy.parse(t["parameters"]["rollout"]["default"], "update_agent.rollout")
    assert [(s.name, s.group) for s in policy.stages] == [
        ("migrate", "controller"), ("conductors", "conductor"),
        ("controllers", "controller"), ("computes", "compute")]
    assert policy.stages[0].run == ("update", "migration") and policy.stages[0].scope == "one"
    groups = {d["properties"]["input_values"]["group"] for d, _ in deployment_groups(t).values()}
    assert {s.group for s in policy.stages} == groups


def render_agent_driven(role, params, signal_url):
    t, config = agent_driven()
    d = t["resources"]["%s_updates" % role]["properties"]
    return render(config, d, dict({"update_serial": "1"}, **params), signal_url)


def run_compute(tmp_path, rollout):
    """One compute of agent-driven-stages.yaml, alone in its fleet (a real etcd of its
    own), run once: (the signals Heat got, the node's /etc/image_id, the agent's log)."""
    w = world.World(str(tmp_path / "world"))
    heat = HeatServer()
    n = w.node(str(tmp_path), occ_mount=True)
    engine = contextlib.ExitStack()
    try:
        url = engine.enter_context(etcd_local.etcd(str(tmp_path / "etcd")))
        params = {"image_id": "img-B", "image_url": world.offered(tmp_path, w.image_b),
                  "image_digest": world.sha256(w.image_b), "rollout": rollout}
        d = render_agent_driven("compute", params, heat.url + "/signal")
        n.write_occ_cache({"heat_local.json": {"deployments": [d]}})
        conf = tmp_path / "a.conf"
        conf.write_text("[daemon]\npoll_interval = 60\n[coordination]\nbackend = %s\n"
                        "node_id = compute-0\n" % url)
        r = agent(n.root, "run", "--once", config=str(conf))
        assert r.returncode == 0, r.stderr
        with open(os.path.join(n.root, "etc/image_id")) as f:
            return heat.signals, f.read().strip(), r.stderr
    finally:
        engine.close()
        heat.close()
        n.stop()


def test_agent_driven_deployment_is_signalled_when_the_node_is_done(tmp_path, need_mounts):
    computes_only = {"stages": [{"name": "computes", "group": "compute", "waves": [1, "100%"]}]}
    signals, image_id, _ = run_compute(tmp_path, computes_only)
    (_, _, body), = signals
    assert body["deploy_status_code"] == 0 and body["image_id"] == "img-B", body
    assert image_id == "img-B"


def test_agent_driven_deployment_waiting_for_its_stage_signals_nothing(tmp_path, need_mounts):
    # the template's own policy: the computes wait for the controllers' migration,
    # and this fleet has no controller, so the compute waits and Heat hears nothing
    t, _ = agent_driven()
    signals, image_id, stderr = run_compute(tmp_path, t["parameters"]["rollout"]["default"])
    assert signals == [], "no signal while the rollout keeps the node waiting"
    assert image_id == "img-A"
    assert "migrate" in stderr and "waiting" in stderr.lower(), stderr[-2000:]
