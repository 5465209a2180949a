"""Fleet rollouts on a real etcd: real daemons on sandbox nodes, in groups, take an
ordered rollout policy from their metadata.

Each node is a loop-mounted sandbox root running `update-agent run`; they share
one etcd on 127.0.0.1. The test watches the engine's records while the rollout
runs and checks, from them and from the nodes themselves, what an operator relies
on: stages in order, never more nodes at once than allowed, a migration on
exactly one node, a halt that stops the stage.
"""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

import etcd_local
import redis_local
import world
import zookeeper_local
from daemon_helpers import start_daemon, stop_daemon
from update_agent.coordination import rollouts
from update_agent.decide.rollout import policy as policies

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]

AGENT = [sys.executable, "-m", "update_agent"]

# kolla's plan for Nova: migrate once, the conductors together, the other
# controllers one at a time, then the computes as a canary, half, the rest
SCENARIO = {"stages": [
    {"name": "migrate", "group": "controller", "scope": "one", "run": ["update", "migration"]},
    {"name": "conductors", "group": "conductor", "max_parallel": "100%"},
    {"name": "controllers", "group": "controller", "max_parallel": 1},
    {"name": "computes", "group": "compute", "waves": [1, "50%", "100%"], "max_parallel": "50%"},
]}
SIZES = {"controller": 3, "conductor": 3, "compute": 6}


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    return world.World(str(tmp_path_factory.mktemp("fleet")))


@pytest.fixture
def etcd(tmp_path):
    """An etcd of the test's own: each test's rollout of img-B starts from no records."""
    with etcd_local.etcd(str(tmp_path / "etcd")) as url:
        yield url


def a_metadata():
    return {"image_id": "img-A", "update_agent": {"image_url": "file:///nonexistent/A.img"}}


class Fleet:
    """Sandbox nodes, each with its daemon, named <group>-<n>."""

    def __init__(self, w, base, backend, sizes, ttl=6):
        self.w, self.base, self.backend, self.ttl = w, base, backend, ttl
        self.nodes, self.daemons = {}, {}
        for group, count in sizes.items():
            for i in range(count):
                self.add("%s-%d" % (group, i), group)

    def add(self, name, group):
        tmp = os.path.join(self.base, name)
        os.makedirs(tmp)
        node = self.w.node(tmp, occ_mount=True, occ_cache={"heat_local.json": a_metadata()})
        self.nodes[name] = (node, group, tmp)
        conf = os.path.join(tmp, "agent.conf")
        with open(conf, "w") as f:
            f.write("[daemon]\npoll_interval = 60\nsplay = 0\n"
                    "[coordination]\nbackend = %s\ngroup = %s\nnode_id = %s\n"
                    "[rollout]\npoll_interval = 1\nmember_ttl = %d\n"
                    % (self.backend, group, name, self.ttl))
        self.daemons[name] = start_daemon(node.root, conf)
        return node

    def offer_b(self, policy, names=None):
        self.offer("img-B", self.w.image_b, policy, names)

    def offer(self, image_id, image, policy, names=None):
        for name in names or self.nodes:
            node, _, tmp = self.nodes[name]
            meta = {"image_id": image_id, "update_agent": {
                "image_url": world.offered(tmp, image),
                "image_digest": world.sha256(image), "rollout": policy}}
            node.write_occ_cache({"heat_local.json": meta})

    def image_id(self, name):
        return world.read(self.nodes[name][0], "etc/image_id").decode().strip()

    def hooks(self, name):
        path = os.path.join(self.nodes[name][0].root, "run/hooks.log")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [line.split()[0] for line in f]

    def kill(self, name):
        proc = self.daemons[name]
        os.killpg(proc.pid, 9)
        proc.wait()

    def release_hang(self, name):
        """End the sleep a hanging hook left behind (its own process group)."""
        path = os.path.join(self.nodes[name][0].root, "run/hang.pid")
        with open(path) as f:
            os.kill(int(f.read()), 9)

    def stop(self):
        logs = {}
        for name, proc in self.daemons.items():
            logs[name] = stop_daemon(proc)
        for node, _, _ in self.nodes.values():
            node.stop()
        return logs


@pytest.fixture(params=["etcd", "redis", "zookeeper"])
def engine(request, tmp_path):
    """A coordination engine of the test's own (no records of another test's rollout)."""
    if request.param == "etcd":
        with etcd_local.etcd(str(tmp_path / "etcd")) as url:
            yield url
    elif request.param == "redis":
        with redis_local.redis() as url:
            yield url
    else:
        with zookeeper_local.zookeeper(str(tmp_path / "zk")) as url:
            yield url


@pytest.fixture
def fleet_factory(w, tmp_path):
    made = []

    def make(sizes, backend, **kw):
        made.append(Fleet(w, str(tmp_path), backend, sizes, **kw))
        return made[-1]
    yield make
    for f in made:
        for name, (code, out, err) in f.stop().items():
            print("--- %s exit %s\n%s" % (name, code, err[-3000:]))


class Sampler:
    """Reads the rollout's stage records every 50 ms, as an operator's watch would."""

    def __init__(self, backend, rid):
        self.records = rollouts.for_url(backend, time.time)
        self.rid = rid
        self.samples = []  # (time, [stage record or None])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            self.samples.append((time.time(), self.records.stages(self.rid)))
            time.sleep(0.05)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.records.stages(self.rid)

    def peak_started(self, i):
        return max((sum(1 for e in (stages[i] or {}).get("nodes", {}).values()
                        if e["state"] == "started")
                    for _, stages in self.samples if len(stages) > i), default=0)


def wait_members(backend, sizes, timeout=120):
    records = rollouts.for_url(backend, time.time)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        groups = records.groups()
        if all(len(groups.get(g, {})) >= n for g, n in sizes.items()):
            return groups
        time.sleep(0.5)
    raise AssertionError("members never registered: %s" % records.groups())


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError("timed out waiting for %s" % what)


def fleet_status(backend, tmp_path, *args):
    conf = tmp_path / "operator.conf"
    conf.write_text("[coordination]\nbackend = %s\n" % backend)
    env = dict(os.environ, PYTHONPATH=os.path.join(world.PROJECT, "agent"))
    return subprocess.run(AGENT + ["--root", str(tmp_path), "--config", str(conf), "fleet"]
                          + list(args), env=env, capture_output=True, text=True, timeout=60)


def status_json(backend, tmp_path):
    out = fleet_status(backend, tmp_path, "status", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_an_ordered_rollout_across_three_groups(fleet_factory, etcd, tmp_path):
    fleet = fleet_factory(SIZES, etcd)
    wait_members(etcd, SIZES)
    rid = policies.rollout_id("img-B")
    sampler = Sampler(etcd, rid)
    fleet.offer_b(SCENARIO)
    wait_for(lambda: all(fleet.image_id(n) == "img-B" for n in fleet.nodes), 900,
             "every node on img-B")
    wait_for(lambda: all(s and s.get("finished") for s in sampler.records.stages(rid)), 120,
             "every stage finished")
    stages = sampler.stop()

    # no stage began before the one before it had finished
    for before, after in zip(stages, stages[1:]):
        first_start = min(e["started"] for e in after["nodes"].values())
        assert first_start >= before["finished"], (before, after)
    # never more nodes at once than the stage allows, at any sampled instant
    assert sampler.peak_started(0) == 1
    assert sampler.peak_started(1) <= 3
    assert sampler.peak_started(2) == 1
    assert 1 <= sampler.peak_started(3) <= 3
    # the computes' canary went alone and had succeeded before anyone else began
    computes = sorted(stages[3]["nodes"].values(), key=lambda e: e["started"])
    assert computes[1]["started"] >= computes[0]["at"]
    # the migration ran exactly once, on the node that owned the one-node stage
    migrated = [n for n in fleet.nodes if "migration" in fleet.hooks(n)]
    assert migrated == [stages[0]["owner"]]
    # every node updated exactly once, and the owner did not update again in its later stage
    for name in fleet.nodes:
        assert fleet.hooks(name).count("configure") == 1, (name, fleet.hooks(name))

    status = fleet_status(etcd, tmp_path, "status", "--json")
    assert status.returncode == 0, status.stderr
    view = json.loads(status.stdout)
    assert [s["finished"] for s in view["stages"]] == [True] * 4
    assert not view["halted"]
    assert sorted(view["groups"]) == ["compute", "conductor", "controller"]


FAILING = {"stages": [
    {"name": "computes", "group": "compute", "waves": [1, "100%"], "max_parallel": 2,
     "halt_after": 1},
]}


def test_a_failed_canary_halts_its_stage_and_a_new_image_rolls_out(fleet_factory, engine, tmp_path):
    etcd = engine  # and Redis, ZooKeeper
    sizes = {"compute": 4}
    fleet = fleet_factory(sizes, etcd)
    wait_members(etcd, sizes)
    # every compute's health check fails: whichever is the canary fails the stage
    for node, _, _ in fleet.nodes.values():
        open(os.path.join(node.root, "run/fail-health"), "w").close()
    rid = policies.rollout_id("img-B")
    records = rollouts.for_url(etcd, time.time)
    fleet.offer_b(FAILING)
    wait_for(lambda: (records.stage(rid, 0) or {}).get("halted"), 300, "the stage to halt")
    time.sleep(5)  # the others poll every second: none may start
    stage = records.stage(rid, 0)
    assert len(stage["nodes"]) == 1, stage
    (canary, entry), = stage["nodes"].items()
    assert entry["state"] == "failed" and "health" in entry["message"]
    out = fleet_status(etcd, tmp_path, "status", "--image-id", "img-B")
    assert out.returncode == 0, out.stderr
    assert canary in out.stdout and "HALTED" in out.stdout and "health" in out.stdout
    # nobody but the canary changed (it has no earlier image to roll back to: it stays unhealthy)
    assert all(fleet.image_id(n) == "img-A" for n in fleet.nodes if n != canary)

    # the fix: another image id is another rollout, and it goes through
    for node, _, _ in fleet.nodes.values():
        os.unlink(os.path.join(node.root, "run/fail-health"))
    image_c = fleet.w.ext4(fleet.w.tree("C", image_id="img-C", release=world.RELEASE,
                                        variant="B"), "C")
    fleet.offer("img-C", image_c, FAILING)
    wait_for(lambda: all(fleet.image_id(n) == "img-C" for n in fleet.nodes), 300,
             "every compute on img-C")
    # a node's /etc/image_id changes before its health checks pass and its entry succeeds
    rid_c = policies.rollout_id("img-C")
    wait_for(lambda: (records.stage(rid_c, 0) or {}).get("finished"), 60, "the stage to finish")
    stage_c = records.stage(rid_c, 0)
    assert not stage_c["halted"] and stage_c["finished"]
    assert {e["state"] for e in stage_c["nodes"].values()} == {"succeeded"}


def marker(fleet, name, what):
    open(os.path.join(fleet.nodes[name][0].root, "run", what), "w").close()


def entries(records, rid, i=0):
    return (records.stage(rid, i) or {}).get("nodes", {})


MIGRATE = {"stages": [
    {"name": "migrate", "group": "controller", "scope": "one", "run": ["update", "migration"]},
    {"name": "controllers", "group": "controller", "max_parallel": "100%"},
]}


def test_a_one_node_step_runs_on_exactly_one_node(fleet_factory, engine, tmp_path):
    sizes = {"controller": 3}
    fleet = fleet_factory(sizes, engine)
    wait_members(engine, sizes)
    fleet.offer_b(MIGRATE)
    wait_for(lambda: all(fleet.image_id(n) == "img-B" for n in fleet.nodes), 300,
             "every controller on img-B")
    records = rollouts.for_url(engine, time.time)
    owner = records.stage(policies.rollout_id("img-B"), 0)["owner"]
    assert [n for n in fleet.nodes if "migration" in fleet.hooks(n)] == [owner]


STEADY = {"stages": [{"name": "computes", "group": "compute", "max_parallel": 1}]}


def test_fleet_halt_by_hand_stops_starts_and_resume_goes_on(fleet_factory, etcd, tmp_path):
    sizes = {"compute": 4}
    fleet = fleet_factory(sizes, etcd)
    wait_members(etcd, sizes)
    for name in fleet.nodes:
        marker(fleet, name, "slow-configure")  # each step takes 2 s or more
    rid = policies.rollout_id("img-B")
    records = rollouts.for_url(etcd, time.time)
    fleet.offer_b(STEADY)
    wait_for(lambda: any(e["state"] == "succeeded" for e in entries(records, rid).values()), 120,
             "a first compute updated")
    out = fleet_status(etcd, tmp_path, "halt", "--reason", "looking at the canary")
    assert out.returncode == 0, out.stderr
    halted_at = records.control(rid)["halted_at"]  # when the halt was recorded
    time.sleep(6)  # every waiting node looked at the engine several times meanwhile
    started = {n: e["started"] for n, e in entries(records, rid).items()}
    assert len(started) < 4, "the halt stopped the rollout"
    late = [n for n, t in started.items() if t > halted_at]
    assert not late, "started after the halt: %s" % late
    view = fleet_status(etcd, tmp_path, "status")
    assert "looking at the canary" in view.stdout
    assert fleet_status(etcd, tmp_path, "resume").returncode == 0
    wait_for(lambda: all(fleet.image_id(n) == "img-B" for n in fleet.nodes), 300,
             "every compute on img-B after the resume")


def test_a_node_that_joins_mid_rollout_follows_its_groups_stage(fleet_factory, etcd, tmp_path):
    sizes = {"controller": 2, "compute": 1}
    fleet = fleet_factory(sizes, etcd)
    wait_members(etcd, sizes)
    for name in fleet.nodes:
        marker(fleet, name, "slow-configure")
    policy = {"stages": [{"name": "controllers", "group": "controller", "max_parallel": 1},
                         {"name": "computes", "group": "compute", "max_parallel": "100%"}]}
    rid = policies.rollout_id("img-B")
    records = rollouts.for_url(etcd, time.time)
    fleet.offer_b(policy)
    wait_for(lambda: entries(records, rid, 0), 120, "the controllers' stage to begin")
    fleet.add("compute-9", "compute")  # a new compute, given the same metadata at once
    fleet.offer_b(policy, ["compute-9"])
    wait_for(lambda: all(fleet.image_id(n) == "img-B" for n in fleet.nodes), 300,
             "every node on img-B")
    first, second = records.stage(rid, 0), records.stage(rid, 1)
    assert second["nodes"]["compute-9"]["started"] >= first["finished"]
    assert sorted(second["nodes"]) == ["compute-0", "compute-9"]


def test_a_node_given_another_policy_waits_and_says_why(fleet_factory, etcd, tmp_path):
    sizes = {"compute": 2}
    fleet = fleet_factory(sizes, etcd)
    wait_members(etcd, sizes)
    fleet.offer_b(STEADY, ["compute-0"])
    wait_for(lambda: fleet.image_id("compute-0") == "img-B", 120, "compute-0 on img-B")
    other = {"stages": [{"name": "computes", "group": "compute", "max_parallel": 2}]}
    fleet.offer_b(other, ["compute-1"])
    node, _, tmp = fleet.nodes["compute-1"]
    out = world.agent(node.root, "--dry-run", config=os.path.join(tmp, "agent.conf"))
    assert out.returncode == 0, out.stderr
    assert "rollout: wait" in out.stdout and "same rollout policy" in out.stdout
    time.sleep(3)
    assert fleet.image_id("compute-1") == "img-A"


def test_a_killed_node_mid_stage_is_reported_and_halts_the_stage(fleet_factory, etcd, tmp_path):
    sizes = {"compute": 3}
    fleet = fleet_factory(sizes, etcd, ttl=4)
    wait_members(etcd, sizes)
    for name in fleet.nodes:
        marker(fleet, name, "hang-configure")
    rid = policies.rollout_id("img-B")
    records = rollouts.for_url(etcd, time.time)
    fleet.offer_b(STEADY)
    wait_for(lambda: any(os.path.exists(os.path.join(fleet.nodes[n][0].root, "run/hang.pid"))
                         for n in entries(records, rid)), 120, "a compute hanging in its step")
    (victim,) = entries(records, rid)
    fleet.kill(victim)
    fleet.release_hang(victim)
    wait_for(lambda: status_json(etcd, tmp_path)["stages"][0]["halted"], 60, "the stage to halt")
    view = status_json(etcd, tmp_path)
    assert view["stages"][0]["lost"] == [victim]
    assert victim in view["stages"][0]["halted"]
    assert list(entries(records, rid)) == [victim], "nobody started after the loss"
    text = fleet_status(etcd, tmp_path, "status").stdout
    assert "LOST" in text and victim in text


def test_a_killed_one_node_runner_halts_the_rollout_and_runs_nothing_twice(fleet_factory, etcd,
                                                                           tmp_path):
    sizes = {"controller": 2}
    fleet = fleet_factory(sizes, etcd, ttl=4)
    wait_members(etcd, sizes)
    for name in fleet.nodes:
        marker(fleet, name, "hang-migration")
    rid = policies.rollout_id("img-B")
    records = rollouts.for_url(etcd, time.time)
    fleet.offer_b(MIGRATE)
    wait_for(lambda: (records.stage(rid, 0) or {}).get("owner") and os.path.exists(os.path.join(
        fleet.nodes[records.stage(rid, 0)["owner"]][0].root, "run/hang.pid")), 120,
        "the owner hanging in its migration")
    owner = records.stage(rid, 0)["owner"]
    fleet.kill(owner)
    fleet.release_hang(owner)
    (other,) = [n for n in fleet.nodes if n != owner]

    def halted():
        return status_json(etcd, tmp_path)["stages"][0]["halted"]
    wait_for(halted, 60, "the rollout to halt")
    assert "died running stage migrate" in halted() and owner in halted()
    time.sleep(3)
    assert "migration" not in fleet.hooks(other) and fleet.image_id(other) == "img-A"


def test_an_etcd_restart_mid_rollout_loses_no_record(fleet_factory, tmp_path):
    client, peer = etcd_local.free_port(), etcd_local.free_port()
    data = str(tmp_path / "etcd")
    first = etcd_local.etcd(data, client, peer)
    url = first.__enter__()
    sizes = {"compute": 3}
    fleet = fleet_factory(sizes, url)
    try:
        wait_members(url, sizes)
        for name in fleet.nodes:
            marker(fleet, name, "slow-configure")
        rid = policies.rollout_id("img-B")
        records = rollouts.for_url(url, time.time)
        fleet.offer_b(STEADY)
        wait_for(lambda: any(e["state"] == "succeeded" for e in entries(records, rid).values()),
                 120, "a first compute updated")
        before = entries(records, rid)
        first.__exit__(None, None, None)
        time.sleep(2)
        first = etcd_local.etcd(data, client, peer)
        first.__enter__()
        after = entries(records, rid)
        for name, entry in before.items():  # what was recorded before is there after
            assert entry["state"] != "succeeded" or after[name] == entry
        wait_for(lambda: all(fleet.image_id(n) == "img-B" for n in fleet.nodes), 300,
                 "every compute on img-B after etcd came back")
        # a node whose finish met the outage records it when it looks again (it backs off)
        wait_for(lambda: sorted(n for n, e in entries(records, rid).items()
                                if e["state"] == "succeeded") == sorted(fleet.nodes), 120,
                 "every compute's success recorded")
    finally:
        for name, (code, out, err) in fleet.stop().items():
            print("--- %s exit %s\n%s" % (name, code, err[-2000:]))
        fleet.nodes.clear()
        fleet.daemons.clear()
        first.__exit__(None, None, None)
