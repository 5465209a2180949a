"""The rollout policy: what metadata (or the config's policy file) may say, and
how a bad value is refused before anything moves."""

import copy
import datetime
import json

import pytest

from update_agent import config
from update_agent.apply import hooks
from update_agent.decide.rollout import policy, windows
from update_agent.decide.rollout.amounts import Amount
from update_agent.errors import BadInput
from update_agent.sources import desired

KEY = "update_agent.rollout"

EXAMPLE = {"stages": [
    {"name": "migrate", "group": "controller", "scope": "one", "run": ["update", "migration"]},
    {"name": "conductors", "group": "conductor", "max_parallel": "100%"},
    {"name": "controllers", "group": "controller", "max_parallel": 1},
    {"name": "computes", "group": "compute", "waves": [1, "50%", "100%"], "max_parallel": "50%",
     "soak": 60, "halt_after": 1,
     "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "hours": "01:00-05:00"}],
     "blockers": [{"hook": "no-maintenance"}, {"url": "http://127.0.0.1:8080/ok"}]},
]}

# The three upgrade procedures of issue 15, written as policies (docs/coordination.md
# shows the same JSON).
OVERCLOUD = {"stages": [
    {"name": "clients", "group": "client", "max_parallel": "100%"},
    {"name": "db-upgrade", "group": "server", "scope": "one", "run": ["update", "migration"]},
    {"name": "servers", "group": "server", "max_parallel": "100%"},
]}
KOLLA_NOVA = {"stages": [
    {"name": "migrate", "group": "controller", "scope": "one", "run": ["update", "migration"]},
    {"name": "conductors", "group": "conductor", "max_parallel": "100%"},
    {"name": "controllers", "group": "controller", "max_parallel": 1},
    {"name": "computes", "group": "compute", "waves": [1, "10%", "100%"], "max_parallel": "10%",
     "soak": 300, "halt_after": "5%"},
]}
TRIPLEO_MINOR = {"stages": [
    {"name": "controllers", "group": "controller", "max_parallel": 1, "halt_after": 1},
    {"name": "computes", "group": "compute", "max_parallel": "25%", "halt_after": 2},
]}


def stage(**keys):
    return {"stages": [dict({"group": "compute"}, **keys)]}


def test_the_shared_example_parses_with_every_value_kept():
    p = policy.parse(EXAMPLE)
    migrate, conductors, controllers, computes = p.stages
    assert (migrate.scope, migrate.run) == (policy.Scope.ONE, ("update", "migration"))
    assert conductors.max_parallel.resolve(7) == 7
    assert computes.waves == (Amount(1), Amount(50, True), Amount(100, True))
    assert (computes.soak, computes.halt_after.resolve(10)) == (60, 1)
    assert computes.windows[0].hours == "01:00-05:00"
    assert [b.kind for b in computes.blockers] == [policy.BlockerKind.HOOK, policy.BlockerKind.URL]
    assert p.of_group("controller") == (0, 2)


def test_defaults_are_filled_in_and_the_normal_form_parses_to_the_same_policy():
    p = policy.parse({"stages": [{"group": "compute"}, {"group": "controller"}]})
    first = p.to_dict()["stages"][0]
    assert first == {"name": "stage-1", "group": "compute", "run": ["update"], "scope": "all",
                     "max_parallel": 1, "waves": [], "soak": 0, "halt_after": 1,
                     "windows": [], "blockers": []}
    assert p.stages[1].name == "stage-2"
    assert policy.parse(p.to_dict()) == p
    assert policy.parse(json.dumps(EXAMPLE)) == policy.parse(EXAMPLE)  # a JSON text too


@pytest.mark.parametrize("raw, path, shown", [
    ([], KEY, "[]"),
    ({}, KEY + ".stages", None),
    ({"stages": []}, KEY + ".stages", "[]"),
    ({"stages": [], "extra": 1}, KEY + ".extra", None),
    ("{not json", KEY, "'{not json'"),
    ({"stages": ["compute"]}, KEY + ".stages[0]", "'compute'"),
    ({"stages": [{}]}, KEY + ".stages[0].group", None),
    (stage(group="bad group"), KEY + ".stages[0].group", "'bad group'"),
    (stage(group="../etc"), KEY + ".stages[0].group", "'../etc'"),
    (stage(colour="red"), KEY + ".stages[0].colour", None),
    (stage(name=""), KEY + ".stages[0].name", "''"),
    (stage(name=7), KEY + ".stages[0].name", "7"),
    (stage(run=[]), KEY + ".stages[0].run", "[]"),
    (stage(run="update"), KEY + ".stages[0].run", "'update'"),
    (stage(run=["update", "configure"]), KEY + ".stages[0].run[1]", "'configure'"),
    (stage(run=["migration", "update"]), KEY + ".stages[0].run", None),
    (stage(run=["update", "update"]), KEY + ".stages[0].run", None),
    (stage(scope="some"), KEY + ".stages[0].scope", "'some'"),
    (stage(max_parallel="150%"), KEY + ".stages[0].max_parallel", "'150%'"),
    (stage(max_parallel="0%"), KEY + ".stages[0].max_parallel", "'0%'"),
    (stage(max_parallel=0), KEY + ".stages[0].max_parallel", "0"),
    (stage(max_parallel=True), KEY + ".stages[0].max_parallel", "True"),
    (stage(max_parallel=1.5), KEY + ".stages[0].max_parallel", "1.5"),
    (stage(max_parallel="5"), KEY + ".stages[0].max_parallel", "'5'"),
    (stage(max_parallel="-5%"), KEY + ".stages[0].max_parallel", "'-5%'"),
    (stage(waves=[1, "0%"]), KEY + ".stages[0].waves[1]", "'0%'"),
    (stage(waves="1,2"), KEY + ".stages[0].waves", "'1,2'"),
    (stage(waves=list(range(1, 18))), KEY + ".stages[0].waves", None),
    (stage(soak=-1), KEY + ".stages[0].soak", "-1"),
    (stage(soak="60"), KEY + ".stages[0].soak", "'60'"),
    (stage(soak=False), KEY + ".stages[0].soak", "False"),
    (stage(halt_after=0), KEY + ".stages[0].halt_after", "0"),
    (stage(halt_after="101%"), KEY + ".stages[0].halt_after", "'101%'"),
    (stage(scope="one", max_parallel=2), KEY + ".stages[0].max_parallel", "2"),
    (stage(scope="one", max_parallel="100%"), KEY + ".stages[0].max_parallel", "'100%'"),
    (stage(scope="one", waves=[1]), KEY + ".stages[0].waves", "[1]"),
    (stage(windows=[{"days": ["mon"]}]), KEY + ".stages[0].windows[0].hours", None),
    (stage(windows=[{"hours": "01:00-02:00"}]), KEY + ".stages[0].windows[0].days", None),
    (stage(windows=[{"days": [], "hours": "01:00-02:00"}]), KEY + ".stages[0].windows[0].days", "[]"),
    (stage(windows=[{"days": ["monday"], "hours": "01:00-02:00"}]),
     KEY + ".stages[0].windows[0].days[0]", "'monday'"),
    (stage(windows=[{"days": ["mon", "mon"], "hours": "01:00-02:00"}]),
     KEY + ".stages[0].windows[0].days", None),
    (stage(windows=[{"days": ["mon"], "hours": "25:00-02:00"}]),
     KEY + ".stages[0].windows[0].hours", "'25:00-02:00'"),
    (stage(windows=[{"days": ["mon"], "hours": "01:00-24:30"}]),
     KEY + ".stages[0].windows[0].hours", "'01:00-24:30'"),
    (stage(windows=[{"days": ["mon"], "hours": "03:00-03:00"}]),
     KEY + ".stages[0].windows[0].hours", "'03:00-03:00'"),
    (stage(windows=[{"days": ["mon"], "hours": "1:00-2:00"}]),
     KEY + ".stages[0].windows[0].hours", "'1:00-2:00'"),
    (stage(windows=[{"days": ["mon"], "hours": "01:00-02:00", "tz": "UTC"}]),
     KEY + ".stages[0].windows[0].tz", None),
    (stage(blockers=[{}]), KEY + ".stages[0].blockers[0]", "{}"),
    (stage(blockers=[{"hook": "a", "url": "http://x/"}]), KEY + ".stages[0].blockers[0]", None),
    (stage(blockers=[{"hook": "../../bin/sh"}]), KEY + ".stages[0].blockers[0].hook",
     "'../../bin/sh'"),
    (stage(blockers=[{"url": "ftp://x/ok"}]), KEY + ".stages[0].blockers[0].url", "'ftp://x/ok'"),
    (stage(blockers=[{"url": "http://x/ ok"}]), KEY + ".stages[0].blockers[0].url", None),
    (stage(blockers=[{"command": "true"}]), KEY + ".stages[0].blockers[0].command", None),
    ({"stages": [{"group": "a", "name": "s"}, {"group": "b", "name": "s"}]},
     KEY + ".stages[1].name", "'s'"),
    ({"stages": [{"group": "a"}, {"group": "b", "name": "stage-1"}]}, KEY + ".stages[1].name",
     "'stage-1'"),
    ({"stages": [{"group": "a"}, {"group": "b", "max_parallel": "x"}]},
     KEY + ".stages[1].max_parallel", "'x'"),
])
def test_each_bad_value_is_refused_naming_its_key_path_and_value(raw, path, shown):
    with pytest.raises(BadInput) as e:
        policy.parse(raw)
    message = str(e.value)
    assert message.startswith("metadata key %r " % path), message
    assert "\n" not in message
    if shown is not None:
        assert shown in message


@pytest.mark.parametrize("key, count", [("stages", 33), ("waves", 17), ("windows", 17),
                                        ("blockers", 17)])
def test_lists_over_their_limit_are_refused(key, count):
    one = {"stages": {"group": "g"}, "waves": 1,
           "windows": {"days": ["mon"], "hours": "01:00-02:00"}, "blockers": {"hook": "b"}}[key]
    items = [dict(one, name="s%d" % i) if key == "stages" else one for i in range(count)]
    raw = {"stages": items} if key == "stages" else stage(**{key: items})
    with pytest.raises(BadInput, match="%d entries, at most %d" % (count, count - 1)):
        policy.parse(raw)
    fits = items[:-1]
    policy.parse({"stages": fits} if key == "stages" else stage(**{key: fits}))


def test_a_policy_from_the_config_file_names_its_source():
    with pytest.raises(BadInput, match=r"^config file /etc/r.json key 'stages\[0\].soak'"):
        policy.parse({"stages": [{"group": "g", "soak": -1}]}, key="",
                     what="config file /etc/r.json key")


def test_a_policy_file_is_used_only_when_the_metadata_has_none():
    text = json.dumps(TRIPLEO_MINOR)
    with_policy = desired.from_metadata(metadata(rollout=KOLLA_NOVA, group="compute"))
    without = desired.from_metadata(metadata())
    assert desired.rollout_of(with_policy, text, "/etc/r.json") == policy.parse(KOLLA_NOVA)
    assert desired.rollout_of(without, text, "/etc/r.json") == policy.parse(TRIPLEO_MINOR)
    assert desired.rollout_of(without, "", "/etc/r.json") is None
    assert (desired.group_of(with_policy, "default"), desired.group_of(without, "default")) == (
        "compute", "default")
    with pytest.raises(BadInput, match=r"^rollout policy file /etc/r.json: key 'stages\[0\].soak' "
                                       r"has invalid value -1"):
        desired.rollout_of(without, '{"stages": [{"group": "g", "soak": -1}]}', "/etc/r.json")
    with pytest.raises(BadInput, match=r"^rollout policy file /etc/r.json: key \(the whole policy\) "
                                       r"has invalid value '\[\[\[\["):
        desired.rollout_of(without, "[" * 100000, "/etc/r.json")


def test_the_allowed_hook_phases_are_the_agents_own():
    assert policy.PHASES == (hooks.MIGRATION,)
    assert set(policy.PHASES) <= set(hooks.PHASES)


@pytest.mark.parametrize("raw, count, resolved", [
    (1, 12, 1), (5, 3, 5), ("50%", 12, 6), ("50%", 5, 3), ("10%", 12, 2), ("1%", 12, 1),
    ("100%", 12, 12), ("34%", 3, 2), ("10%", 0, 1), ("33%", 100, 33),
])
def test_percentages_resolve_against_the_targets_rounding_up_and_at_least_one(raw, count, resolved):
    assert Amount.parse(raw).resolve(count) == resolved


@pytest.mark.parametrize("change", [
    lambda p: p["stages"][3].update(soak=61),
    lambda p: p["stages"][3]["waves"].__setitem__(1, "51%"),
    lambda p: p["stages"][3].update(max_parallel="49%"),
    lambda p: p["stages"][3].update(halt_after=2),
    lambda p: p["stages"][3]["windows"][0].update(hours="01:00-05:01"),
    lambda p: p["stages"][3]["windows"][0]["days"].append("sat"),
    lambda p: p["stages"][3]["blockers"][1].update(url="http://127.0.0.1:8081/ok"),
    lambda p: p["stages"][0].update(run=["update"]),
    lambda p: p["stages"][0].update(scope="all"),
    lambda p: p["stages"][1].update(name="conductor"),
    lambda p: p["stages"][1].update(group="conductors"),
    lambda p: p["stages"].reverse(),
    lambda p: p["stages"].pop(),
])
def test_the_digest_changes_when_any_value_changes(change):
    changed = copy.deepcopy(EXAMPLE)
    change(changed)
    assert policy.parse(changed).digest != policy.parse(EXAMPLE).digest


def test_the_digest_ignores_key_order_and_spelled_out_defaults():
    reordered = {"stages": [dict(reversed(list(s.items()))) for s in EXAMPLE["stages"]]}
    assert policy.parse(reordered).digest == policy.parse(EXAMPLE).digest
    spelled = {"stages": [{"group": "g", "name": "stage-1", "run": ["update"], "scope": "all",
                           "max_parallel": 1, "soak": 0, "halt_after": 1, "waves": [],
                           "windows": [], "blockers": []}]}
    assert policy.parse(spelled).digest == policy.parse({"stages": [{"group": "g"}]}).digest
    assert len(policy.parse(EXAMPLE).digest) == 64
    days = copy.deepcopy(EXAMPLE)
    days["stages"][3]["windows"][0]["days"].reverse()  # the same days
    assert policy.parse(days).digest == policy.parse(EXAMPLE).digest


def test_one_rollout_id_per_image_id():
    rid = policy.rollout_id("img-2")
    assert rid == policy.rollout_id("img-2") and len(rid) == 16 and int(rid, 16) >= 0
    assert policy.rollout_id("img-3") != rid


@pytest.mark.parametrize("procedure", [OVERCLOUD, KOLLA_NOVA, TRIPLEO_MINOR],
                         ids=["overcloud", "kolla-nova", "tripleo-minor"])
def test_the_issues_upgrade_procedures_are_policies_and_the_docs_show_them(procedure):
    import os
    p = policy.parse(procedure)
    assert [s.name for s in p.stages] == [s["name"] for s in procedure["stages"]]
    doc = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "coordination.md")
    with open(doc) as f:
        text = f.read()
    blocks = [b.split("```", 1)[0] for b in text.split("```json\n")[1:]]
    assert any(json.loads(b) == procedure for b in blocks), "docs/coordination.md lacks it"


def test_the_docs_reference_names_every_stage_key():
    import os
    doc = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "coordination.md")
    with open(doc) as f:
        text = f.read().split("## Rollout policies", 1)[1]
    for key in policy.STAGE_KEYS + ("days", "hours", "hook", "url"):
        assert "`%s`" % key in text, key


# windows: local time, days name the day a window starts on

def at(day, hh, mm):
    # 2026-11-30 is a Monday
    return datetime.datetime(2026, 11, 30, hh, mm) + datetime.timedelta(days=windows.DAYS.index(day))


NIGHT = windows.Window(("fri",), "22:00-02:00")
WEEKDAYS = windows.Window(("mon", "tue", "wed", "thu", "fri"), "01:00-05:00")


@pytest.mark.parametrize("window, when, inside", [
    (WEEKDAYS, at("mon", 1, 0), True),
    (WEEKDAYS, at("mon", 4, 59), True),
    (WEEKDAYS, at("mon", 5, 0), False),
    (WEEKDAYS, at("mon", 0, 59), False),
    (WEEKDAYS, at("sat", 2, 0), False),
    (NIGHT, at("fri", 21, 59), False),
    (NIGHT, at("fri", 22, 0), True),
    (NIGHT, at("fri", 23, 59), True),
    (NIGHT, at("sat", 0, 0), True),  # the morning after friday's start
    (NIGHT, at("sat", 1, 59), True),
    (NIGHT, at("sat", 2, 0), False),
    (NIGHT, at("fri", 1, 0), False),  # thursday named no window
    (NIGHT, at("sat", 22, 30), False),
    (windows.Window(("sun",), "23:00-01:00"), at("mon", 0, 30), True),  # the week wraps
    (windows.Window(("sun",), "00:00-24:00"), at("sun", 23, 59), True),
    (windows.Window(("sun",), "00:00-24:00"), at("mon", 0, 0), False),
])
def test_windows_use_local_time_and_may_cross_midnight(window, when, inside):
    is_open, why = windows.window_open((window,), when)
    assert is_open is inside
    assert window.hours in why


def test_no_window_is_always_open_and_a_closed_one_says_when_it_is():
    assert windows.window_open((), at("sun", 12, 0))[0] is True
    is_open, why = windows.window_open((WEEKDAYS, NIGHT), at("sun", 12, 0))
    assert not is_open
    assert "sun 12:00" in why and "fri 22:00-02:00" in why and "01:00-05:00" in why


def test_windows_parsed_from_a_policy_are_checked_the_same_way():
    w = policy.parse(EXAMPLE).stages[3].windows
    assert windows.window_open(w, at("tue", 3, 0))[0]
    assert not windows.window_open(w, at("sat", 3, 0))[0]


# where the policy comes from: metadata, or the config's [rollout] section

def metadata(**opts):
    return {"image_id": "img-2",
            "update_agent": dict({"image_url": "https://images/img-2.qcow2"}, **opts)}


def test_metadata_carries_the_policy_and_the_group():
    want = desired.from_metadata(metadata(rollout=EXAMPLE, group="compute"))
    assert want.rollout == policy.parse(EXAMPLE) and want.group == "compute"
    assert json.loads(json.dumps(want.to_dict()))["rollout"] == policy.parse(EXAMPLE).to_dict()


def test_metadata_without_them_leaves_the_config_to_decide():
    want = desired.from_metadata(metadata())
    assert (want.rollout, want.group) == (None, "")
    assert want.to_dict()["rollout"] is None


@pytest.mark.parametrize("opts, words", [
    ({"group": "web servers"}, "'update_agent.group' has invalid value 'web servers'"),
    ({"group": 3}, "'update_agent.group' has invalid value 3"),
    ({"rollout": {"stages": [{"group": "c", "max_parallel": "150%"}]}},
     "'update_agent.rollout.stages[0].max_parallel' has invalid value '150%'"),
    ({"rollout": ["c"]}, "'update_agent.rollout' has invalid value ['c']"),
])
def test_bad_rollout_metadata_is_refused_naming_the_key(opts, words):
    with pytest.raises(BadInput, match="^metadata key ") as e:
        desired.from_metadata(metadata(**opts))
    assert words in str(e.value)


def test_the_config_names_a_policy_file_by_absolute_path(tmp_path):
    assert config.Config().rollout.policy_file == ""
    path = tmp_path / "update-agent.conf"
    path.write_text("[rollout]\npolicy_file = /etc/update-agent/rollout.json\n")
    assert config.load(str(path)).rollout.policy_file == "/etc/update-agent/rollout.json"
    path.write_text("[rollout]\npolicy_file = rollout.json\n")
    with pytest.raises(BadInput, match="policy_file.*rollout.json"):
        config.load(str(path))


def test_config_and_metadata_groups_follow_one_rule(tmp_path):
    path = tmp_path / "update-agent.conf"
    for name, ok in [("compute", True), ("compute-1.a_b", True), ("-x", False),
                     ("x" * 64, True), ("x" * 65, False), ("a/b", False)]:
        path.write_text("[coordination]\ngroup = %s\n" % name)
        try:
            config.load(str(path))
            in_config = True
        except BadInput:
            in_config = False
        try:
            desired.validate_group(name)
            in_metadata = True
        except BadInput:
            in_metadata = False
        assert in_config is in_metadata is ok, name
