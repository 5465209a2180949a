"""capacity.check and plan.decide: room on the root and in the state dir, bytes and inodes."""

import types

import test_plan
from test_plan import D, F, decide, facts

from update_agent.decide import capacity, plan
from update_agent.decide.changes import ChangeSet
from update_agent.decide.restarts import RestartPlan


def many_added(n):
    image = test_plan.tree(motd="bye")
    image["usr/share"] = D()
    image.update({"usr/share/f%d" % i: F("x%d" % i, 1) for i in range(n)})
    return image


def test_too_few_free_inodes_on_the_root_is_refused_with_the_numbers():
    # 101 added paths, a margin of 64: 165 inodes needed
    p = decide(image=many_added(100), f=facts(root_free_inodes=164))
    assert p.action == plan.REFUSE
    assert any("not enough free inodes on the root /: need 165 inodes" in r and "have 164" in r
               and "101 added paths" in r for r in p.reasons), p.reasons
    assert decide(image=many_added(100), f=facts(root_free_inodes=165)).action == plan.IN_PLACE


def test_a_filesystem_that_counts_no_inodes_is_not_refused_for_them():
    assert decide(image=many_added(100), f=facts(root_free_inodes=None)).action == plan.IN_PLACE


def test_a_full_state_dir_on_its_own_filesystem_is_refused_naming_it():
    f = facts(state_fs="/mnt/state", state_free_bytes=1000, state_free_inodes=10**6)
    p = decide(f=f)
    assert p.action == plan.REFUSE
    assert any("not enough free space on the state dir /var/lib/update-agent (filesystem "
               "/mnt/state): need" in r and "have 1000" in r for r in p.reasons), p.reasons


def test_a_state_dir_without_inodes_is_refused():
    p = decide(f=facts(state_fs="/mnt/state", state_free_bytes=10**9, state_free_inodes=5))
    assert any("not enough free inodes on the state dir" in r and "need %d inodes"
               % capacity.STATE_INODES in r and "have 5" in r for r in p.reasons), p.reasons


def test_a_state_dir_on_the_root_adds_its_needs_to_the_root():
    ch = ChangeSet(added=("a",), transfer=("a",), bytes=10)
    alone = capacity.check(facts(root_free_inodes=10**6), ch, (), RestartPlan(), 0)
    assert alone == []
    room = capacity.STATE_SLACK_BYTES + 10  # the state's slack plus the content: not the list
    shared = capacity.check(facts(state_on_root_fs=True, free_bytes=room), ch, (), RestartPlan(), 0)
    assert len(shared) == 1 and "the state dir's" in shared[0] and "have %d" % room in shared[0]


def test_files_kept_alive_by_the_pin_need_inodes_of_their_own():
    ch = ChangeSet(changed=("usr/bin/x",), transfer=("usr/bin/x",), bytes=1)
    # 20 files replaced, 10 of them mapped by a process: those keep their old inode
    pins = RestartPlan(targets=tuple((i, "usr/lib/l%d" % i) for i in range(20)))
    procs = [types.SimpleNamespace(inodes=frozenset(range(10)))]
    need = capacity.ROOT_INODE_MARGIN + 10
    f = facts(root_free_inodes=need - 1)
    out = capacity.check(f, ch, (), pins, 0, procs)
    assert out and "need %d inodes" % need in out[0] and "10 replaced files kept" in out[0]
    assert capacity.check(facts(root_free_inodes=need), ch, (), pins, 0, procs) == []
