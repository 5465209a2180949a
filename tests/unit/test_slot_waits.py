"""fleetlock.held: how a wait for a busy slot ends (the lease slots' wait is tested
on real engines in test_reboot_path.py)."""

import types

import pytest

from update_agent.coordination import fleetlock
from update_agent.errors import AgentError, Interrupted


def busy_client(takes):
    return types.SimpleNamespace(group="web", take=lambda: takes.append(1) or (False, "held by node-2"),
                                 release=lambda: None)


def test_a_stop_asked_for_ends_the_wait_and_nothing_is_held():
    takes, stops = [], iter([False, False, True])
    with pytest.raises(Interrupted, match="stopped while waiting for a slot in group web"):
        with fleetlock.held(busy_client(takes), 3600, sleep=lambda s: None, monotonic=lambda: 0,
                            should_stop=lambda: next(stops)):
            pytest.fail("the body ran without a slot")
    assert len(takes) == 3


def test_the_timeout_names_the_group_and_the_holder():
    clock = iter([0, 10, 20, 31])
    with pytest.raises(AgentError, match="no slot in group web after 30s: held by node-2"):
        with fleetlock.held(busy_client([]), 30, sleep=lambda s: None, monotonic=lambda: next(clock)):
            pytest.fail("the body ran without a slot")
