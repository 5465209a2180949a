"""Health checks after every apply, automatic rollback, `update-agent rollback`."""

import json
import os

import pytest

import world
from world import agent, plan_json, write_metadata

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    w = world.World(str(tmp_path_factory.mktemp("rollback")))
    tree_c = w.tree("img-C", image_id="img-C", release=world.RELEASE, variant="B")
    with open(os.path.join(tree_c, "usr/bin/app"), "w") as f:
        f.write("#!/bin/sh\necho app version 3\n")
    os.chmod(os.path.join(tree_c, "usr/bin/app"), 0o755)
    w.image_c = w.ext4(tree_c, "C")
    return w


@pytest.fixture
def node_on_b(w, tmp_path):
    """A node that came to image B through the agent (so B is the cached previous)."""
    n = w.node(str(tmp_path))
    assert agent(n.root, "apply", metadata=w.metadata_for_b(str(tmp_path))).returncode == 0
    yield n
    n.stop()


def meta_c(w, tmp_path):
    return write_metadata(str(tmp_path / "c.json"), "img-C", world.offered(tmp_path, w.image_c),
                          world.sha256(w.image_c))


def read(n, rel):
    with open(os.path.join(n.root, rel)) as f:
        return f.read()


def test_a_failing_health_hook_rolls_back(w, node_on_b, tmp_path):
    n = node_on_b
    open(os.path.join(n.root, "run/fail-health"), "w").close()
    r = agent(n.root, "apply", "--json", metadata=meta_c(w, tmp_path))
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["result"] == "rolled-back"
    assert "health" in r.stderr and "rolled back to img-B" in r.stderr
    assert read(n, "etc/image_id") == "img-B\n"
    world.assert_matches_image(n.root, w.tree_b)
    assert "ro" in world.root_mount_options(n.root)
    # the rejected image is not applied again on its own; --force does
    plan = plan_json(n.root, meta_c(w, tmp_path))
    assert plan["action"] == "refuse" and any("rolled back from" in x for x in plan["reasons"])
    os.unlink(os.path.join(n.root, "run/fail-health"))
    r = agent(n.root, "apply", "--force", metadata=meta_c(w, tmp_path))
    assert r.returncode == 0, r.stderr
    assert read(n, "etc/image_id") == "img-C\n"


def test_a_failing_http_probe_rolls_back(w, node_on_b, tmp_path, http_dir):
    conf = tmp_path / "a.conf"
    conf.write_text("[health]\nurls = %s/healthz\ntimeout = 2\n" % http_dir.url)  # 404
    r = agent(node_on_b.root, "apply", metadata=meta_c(w, tmp_path), config=str(conf))
    assert r.returncode == 1 and "probe %s/healthz: HTTP 404" % http_dir.url in r.stderr
    assert read(node_on_b, "etc/image_id") == "img-B\n"
    (tmp_path / "www" / "healthz").write_text("ok")
    r = agent(node_on_b.root, "apply", "--force", metadata=meta_c(w, tmp_path), config=str(conf))
    assert r.returncode == 0, r.stderr


def test_update_agent_rollback(w, node_on_b, tmp_path):
    n = node_on_b
    assert agent(n.root, "apply", metadata=meta_c(w, tmp_path)).returncode == 0
    r = agent(n.root, "rollback", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["action"] == "rollback" and out["image_id"] == "img-B" and out["result"] == "success"
    world.assert_matches_image(n.root, w.tree_b)
    assert "ro" in world.root_mount_options(n.root)
    assert plan_json(n.root, meta_c(w, tmp_path))["action"] == "refuse", "C is rejected now"


def test_rollback_without_a_previous_image_is_refused(w, tmp_path):
    n = w.node(str(tmp_path))
    try:
        before = world.snapshot(n.root)
        r = agent(n.root, "rollback")
        assert r.returncode == 1 and "no previous image" in r.stderr
        assert world.snapshot(n.root) == before
    finally:
        n.stop()


def test_a_failed_rollback_still_says_why_it_was_rolling_back(w, node_on_b, tmp_path):
    n = node_on_b
    open(os.path.join(n.root, "run/fail-health"), "w").close()
    # B's image is gone from the cache: the rollback cannot stage it
    images = os.path.join(n.root, "var/lib/update-agent/images")
    for name in os.listdir(images):
        if name.endswith(".img"):
            os.unlink(os.path.join(images, name))
    r = agent(n.root, "apply", metadata=meta_c(w, tmp_path))
    assert r.returncode == 1
    assert "health check failed" in r.stderr and "rollback failed" in r.stderr, r.stderr
    assert "ro" in world.root_mount_options(n.root)
