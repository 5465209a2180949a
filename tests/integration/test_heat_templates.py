"""The example Heat templates in docs/heat, rendered into the metadata Heat gives a
server, drive a real update and get every declared output back in the signal."""

import os
import uuid

import pytest
import yaml

import world
from daemon_helpers import HeatServer
from world import agent

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]

HEAT_DIR = os.path.join(world.PROJECT, "docs", "heat")


def load(name):
    with open(os.path.join(HEAT_DIR, name)) as f:
        return yaml.safe_load(f)


def resolve(value, params):
    if isinstance(value, dict) and set(value) == {"get_param"}:
        return params[value["get_param"]]
    return value


def render_deployment(params, signal_url):
    """What Heat puts in the server's metadata for server-update.yaml's deployment."""
    config = load("update-agent-config.yaml")["resources"]["config"]["properties"]
    deployment = load("server-update.yaml")["resources"]["update"]["properties"]
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
        declared = {o["name"] for o in d["outputs"]}
        assert declared <= set(body), "every output the config declares is signalled"
        assert body["image_id"] == "img-B" and body["action"] == "in-place"
        assert open(os.path.join(n.root, "etc/image_id")).read() == "img-B\n"
    finally:
        heat.close()
        n.stop()
