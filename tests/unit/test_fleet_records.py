"""Rollout records over the file:// store, with a clock the test turns: the key
layout, expiry, listings, and the backends a rollout policy cannot use. The
same calls on etcd, Redis and ZooKeeper: tests/integration/test_rollout_records.py."""

import json

import pytest

from fakes import Clock

from update_agent.coordination import keys, rollouts, stores
from update_agent.errors import AgentError, BadInput


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def records(tmp_path, clock):
    fleet = rollouts.for_url("file://%s" % tmp_path, clock)
    fleet.store.clock = clock  # the file store's expiry runs on the same clock
    return fleet


def test_the_keys_operators_read():
    assert keys.member("compute", "n1") == "/update-agent/members/compute/n1"
    assert keys.control("0123456789abcdef") == "/update-agent/rollouts/0123456789abcdef/control"
    assert keys.stage("0123456789abcdef", 3) == "/update-agent/rollouts/0123456789abcdef/stage-3"
    assert keys.slot("web") == "/update-agent/slots/web"


@pytest.mark.parametrize("key, expected", [
    ("/update-agent/rollouts/r1/stage-12", 12),
    ("/update-agent/rollouts/r1/control", None),
    ("/update-agent/rollouts/r1/stage-x", None),
    ("/update-agent/rollouts/r10/stage-1", None),
    ("/update-agent/rollouts/r1/stage-\u00b2", None),  # a digit, but no number
])
def test_stage_index_reads_only_the_rollouts_own_stages(key, expected):
    assert keys.stage_index(key, "r1") == expected


def test_a_member_record_says_who_and_until_when(records, clock):
    records.register("compute", "n1", {"image_id": "img-1", "state": "idle", "since": 900}, ttl=30)
    assert records.members("compute") == {"n1": {
        "node": "n1", "group": "compute", "image_id": "img-1", "state": "idle", "since": 900,
        "seen": 1000.0, "expires": 1030.0}}


def test_a_member_is_gone_once_its_ttl_ran_out_unless_it_beat(records, clock):
    records.register("compute", "n1", {"state": "idle"}, ttl=30)
    records.register("compute", "n2", {"state": "idle"}, ttl=30)
    clock.now += 20
    records.register("compute", "n1", {"state": "running"}, ttl=30)
    clock.now += 15
    assert {n: r["state"] for n, r in records.members("compute").items()} == {"n1": "running"}
    assert list(records.groups()) == ["compute"]
    clock.now += 30
    assert records.members("compute") == {} and records.groups() == {}


def test_an_expired_record_is_written_over_as_if_it_were_not_there(records, clock):
    store = records.store
    with stores.session(store) as s:
        s.put("/update-agent/members/g/n1", '{"state": "old"}', ttl=5)
        clock.now += 6
        assert s.get("/update-agent/members/g/n1")[0] is None
        assert s.swap("/update-agent/members/g/n1", None, '{"state": "new"}')
        assert json.loads(s.get("/update-agent/members/g/n1")[0]) == {"state": "new"}


def test_groups_lists_each_group_by_its_whole_name(records):
    for group, node in [("a", "n1"), ("ab", "n2"), ("ab", "n3")]:
        records.register(group, node, {}, ttl=60)
    assert sorted(records.members("a")) == ["n1"]
    assert {g: sorted(m) for g, m in records.groups().items()} == {"a": ["n1"], "ab": ["n2", "n3"]}


def test_stages_come_in_index_order_with_gaps_as_none(records):
    for i in (10, 0, 2):
        records.update_stage("r1", i, lambda s, i=i: ({"owner": "n%d" % i}, None))
    records.update_control("r1", lambda c: ({"image_id": "img"}, None))
    got = records.stages("r1")
    assert len(got) == 11 and [got[i]["owner"] for i in (0, 2, 10)] == ["n0", "n2", "n10"]
    assert got[1] is None and records.stages("r2") == [] and records.rollouts() == ["r1"]


def test_update_passes_a_copy_so_a_change_in_place_is_written(records):
    def add(node):
        def fn(record):
            record = record or {"nodes": {}}
            record["nodes"][node] = "started"  # in place, as a careless fn would
            return record, None
        return fn
    records.update_stage("r1", 0, add("n1"))
    records.update_stage("r1", 0, add("n2"))
    assert records.stage("r1", 0) == {"nodes": {"n1": "started", "n2": "started"}}


def test_update_returns_fns_result_and_leaves_an_unchanged_record_alone(records):
    assert records.update_control("r1", lambda c: ({"halted": ""}, "created")) == "created"
    assert records.update_control("r1", lambda c: (c, "as it was")) == "as it was"
    assert records.control("r1") == {"halted": ""}


@pytest.mark.parametrize("key", ["/update-agent/x", "/update-agent/members/../x",
                                 "/update-agent/members//n", "/elsewhere/a/b"])
def test_the_file_store_refuses_keys_outside_its_layout(tmp_path, key):
    store = stores.for_url("file://%s" % tmp_path)
    with pytest.raises(ValueError):
        store.get(key)


def test_a_fleetlock_server_cannot_hold_a_rollout():
    with pytest.raises(BadInput) as e:
        rollouts.for_url("https://airlock.example:3333", Clock())
    assert str(e.value) == (
        "rollout policies need etcd, Redis, ZooKeeper or file:// coordination; "
        "https://airlock.example:3333 is a FleetLock server, which has only reboot slots")
    assert e.value.exit_code == 2


def test_an_unknown_backend_is_named():
    with pytest.raises(BadInput) as e:
        rollouts.for_url("consul://127.0.0.1:8500", Clock())
    assert "'consul://127.0.0.1:8500'" in str(e.value)


def test_a_record_that_is_not_json_is_named_in_one_error(records, tmp_path):
    (tmp_path / "members" / "g").mkdir(parents=True)
    (tmp_path / "members" / "g" / "n1.json").write_text("{half a record")
    with pytest.raises(AgentError) as e:
        records.members("g")
    assert str(e.value) == ("coordination: the record at /update-agent/members/g/n1 is not "
                            "a JSON object: '{half a record'")
