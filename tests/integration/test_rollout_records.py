"""Rollout records (members, control, stages) on real engines on 127.0.0.1:
etcd (Debian's etcd-server), Redis, ZooKeeper (Debian's zookeeper) and the
file:// store."""

import threading
import time

import pytest

import etcd_local
from update_agent.coordination import RebootSlots, keys, rollouts, stores
from update_agent.errors import AgentError

ENGINES = ["etcd", "redis", "zookeeper", "file"]


@pytest.fixture(params=ENGINES)
def url(request, tmp_path):
    if request.param == "file":
        return "file://%s/records" % tmp_path
    return request.getfixturevalue({"redis": "redis_url"}.get(request.param, request.param))


@pytest.fixture
def records(url):
    return rollouts.for_url(url, time.time)


def unique(name):
    """The engines live for the whole module: each test keeps to names of its own."""
    return "%s-%d" % (name, time.time_ns())


def member(image="img-1", state="idle"):
    return {"image_id": image, "state": state, "since": time.time()}


def test_a_member_is_listed_until_its_ttl_runs_out_and_heartbeats_keep_it(records):
    group = unique("g")
    records.register(group, "beating", member(), ttl=2)
    records.register(group, "silent", member(state="running"), ttl=2)
    listed = records.members(group)
    assert sorted(listed) == ["beating", "silent"]
    assert listed["silent"]["state"] == "running" and listed["silent"]["group"] == group
    assert records.groups()[group].keys() == {"beating", "silent"}

    registered, gone_after = time.monotonic(), None
    # beat past the ttl twice over, and until the silent one is gone (6 s at most)
    while time.monotonic() - registered < (4 if gone_after else 6):
        records.register(group, "beating", member(), ttl=2)  # a heartbeat
        listed = records.members(group)
        assert "beating" in listed, "a member that keeps beating stays listed"
        if "silent" not in listed and gone_after is None:
            gone_after = time.monotonic() - registered
        time.sleep(0.4)
    assert gone_after is not None, "the silent member was never dropped"
    print("\nsilent member dropped %.1f s after it registered (ttl 2 s)" % gone_after)
    assert 1.5 <= gone_after <= 4.5
    assert list(records.members(group)) == ["beating"]
    assert list(records.groups()[group]) == ["beating"]


def test_twenty_nodes_updating_one_stage_record_lose_no_update(records):
    rid, nodes = unique("r"), ["node-%02d" % i for i in range(20)]
    start = threading.Barrier(len(nodes))
    errors = []

    def mark(node, state):
        def fn(record):
            record = record or {"nodes": {}, "owner": "", "halted": "", "finished": 0}
            record["nodes"][node] = {"state": state, "at": time.time(), "message": ""}
            return record, state
        return fn

    def node_life(node):
        try:
            start.wait(30)
            assert records.update_stage(rid, 1, mark(node, "started")) == "started"
            assert records.update_stage(rid, 1, mark(node, "succeeded")) == "succeeded"
        except Exception as e:  # noqa: BLE001 (reported by the main thread)
            errors.append("%s: %r" % (node, e))
    threads = [threading.Thread(target=node_life, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    entries = records.stage(rid, 1)["nodes"]
    assert {n: e["state"] for n, e in entries.items()} == {n: "succeeded" for n in nodes}
    assert records.stages(rid) == [None, records.stage(rid, 1)]


def test_of_twenty_nodes_racing_to_create_the_control_record_one_wins(records):
    rid, winners = unique("r"), []
    start = threading.Barrier(20)

    def create(node):
        def fn(control):
            if control is not None:
                return control, False
            return {"image_id": "img-1", "policy": "p", "created": time.time(), "halted": "",
                    "halted_at": 0, "halted_by": node}, True
        start.wait(30)
        if records.update_control(rid, fn):
            winners.append(node)
    threads = [threading.Thread(target=create, args=("n%d" % i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(winners) == 1
    assert records.control(rid)["halted_by"] == winners[0]


def test_prefixes_are_whole_names(records):
    a = unique("a")
    ab = a + "b"  # "a-123" and "a-123b"
    records.register(a, "n1", member(), ttl=60)
    records.register(ab, "n2", member(), ttl=60)
    assert list(records.members(a)) == ["n1"]
    assert list(records.members(ab)) == ["n2"]
    groups = records.groups()
    assert list(groups[a]) == ["n1"] and list(groups[ab]) == ["n2"]

    r1 = unique("r")
    r10 = r1 + "0"
    stage = {"nodes": {}, "owner": "", "halted": "", "finished": 0}
    records.update_stage(r1, 0, lambda s: (dict(stage, owner="n1"), None))
    records.update_stage(r1, 2, lambda s: (dict(stage, owner="n3"), None))
    records.update_stage(r10, 0, lambda s: (dict(stage, owner="other"), None))
    records.update_control(r1, lambda c: ({"image_id": "x"}, None))
    assert [s and s["owner"] for s in records.stages(r1)] == ["n1", None, "n3"]
    assert [s["owner"] for s in records.stages(r10)] == ["other"]
    assert records.stages(unique("none")) == []
    assert {r1, r10} <= set(records.rollouts())
    assert records.control(r1) == {"image_id": "x"} and records.control(r10) is None


def test_a_member_that_leaves_is_no_longer_listed(records):
    group = unique("g")
    records.register(group, "n1", member(), ttl=60)
    records.register(group, "n2", member(), ttl=60)
    records.leave(group, "n1")
    assert list(records.members(group)) == ["n2"]


def test_slot_records_keep_their_key(url):
    """A slot record written before rollouts existed is read and taken over as it was."""
    store = stores.for_url(url)
    group = unique("slots")
    old = '{"failures": 0, "frozen": "", "holders": {"old-node": 1700000000}, "max": 2}'
    with stores.session(store) as s:
        s.put("/update-agent/slots/" + group, old)
    slots = RebootSlots(store, group, 2, "new-node", time.time)
    assert list(slots.state()["holders"]) == ["old-node"]
    assert slots.take()[0]
    with stores.session(store) as s:
        text, _ = s.get("/update-agent/slots/" + group)
        assert '"new-node"' in text and '"old-node"' in text
        assert "/update-agent/slots/" + group in s.children(keys.SLOTS)


def test_file_slot_records_stay_where_they_were(tmp_path):
    store = stores.for_url("file://%s" % tmp_path)
    assert RebootSlots(store, "web", 1, "n1", time.time).take()[0]
    assert '"n1"' in (tmp_path / "web.json").read_text()


@pytest.mark.parametrize("scheme", ["etcd3+http", "redis", "zookeeper"])
def test_an_engine_that_does_not_answer_is_named_in_one_error(scheme):
    url = "%s://127.0.0.1:%d" % (scheme, etcd_local.free_port())  # nothing listens there
    records = rollouts.for_url(url, time.time, timeout=2)
    for call in (lambda: records.members("g"), lambda: records.register("g", "n", member(), 5),
                 lambda: records.update_stage("r", 0, lambda s: ({}, None))):
        with pytest.raises(AgentError) as e:
            call()
        assert url in str(e.value) and "\n" not in str(e.value)


def _when_up(call, timeout=30):
    """call()'s value once the engine answers again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except AgentError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_records_survive_an_etcd_restart_and_clients_reconnect(tmp_path):
    data, ports = str(tmp_path / "etcd"), (etcd_local.free_port(), etcd_local.free_port())
    group, rid = "computes", "0123456789abcdef"
    with etcd_local.etcd(data, *ports) as url:
        records = rollouts.for_url(url, time.time, timeout=3)
        records.register(group, "n1", member(state="running"), ttl=60)
        records.update_control(rid, lambda c: ({"image_id": "img-2", "halted": ""}, None))
        records.update_stage(rid, 0, lambda s: ({"nodes": {"n1": {"state": "started"}}}, None))
    with pytest.raises(AgentError) as e:
        records.members(group)
    assert url in str(e.value)
    with etcd_local.etcd(data, *ports):
        assert _when_up(lambda: records.members(group))["n1"]["state"] == "running"
        assert records.control(rid) == {"image_id": "img-2", "halted": ""}
        assert records.stages(rid) == [{"nodes": {"n1": {"state": "started"}}}]
        records.update_stage(rid, 0, lambda s: ({"nodes": {"n1": {"state": "succeeded"}}}, None))
        assert records.stage(rid, 0)["nodes"]["n1"]["state"] == "succeeded"
        records.register(group, "n2", member(), ttl=60)
        assert sorted(records.members(group)) == ["n1", "n2"]


def test_group_names_lists_the_live_members_as_groups_does_without_their_records(records):
    group, other = unique("g"), unique("h")
    records.register(group, "b", member(), ttl=30)
    records.register(group, "a", member(state="waiting"), ttl=30)
    records.register(other, "c", member(), ttl=2)
    names = records.group_names()
    assert names[group] == ["a", "b"] and names[other] == ["c"]
    assert sorted(records.groups()[group]) == names[group]
    time.sleep(3)  # c's ttl runs out: it is no name either
    assert other not in records.group_names()
