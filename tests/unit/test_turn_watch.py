"""The daemon's wait for its turn (daemon/turns.py): a wake-up from the fleet
wakes the loop; a watch that times out does not (the loop's own timeout is the
poll); a watch that fails wakes the loop after the poll interval, as a poll
would; an engine with no watch leaves the loop to poll."""

import os

import pytest

from update_agent.coordination.stores import Watched
from update_agent.daemon.turns import TurnWatch
from update_agent.errors import AgentError


class Fleet:
    def __init__(self, answer, watches=True):
        self.answer, self._watches, self.waits = answer, watches, []

    def watches(self):
        return self._watches

    def wait_turn(self, timeout):
        self.waits.append(timeout)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.fixture
def pipe():
    r, w = os.pipe()
    os.set_blocking(r, False)
    yield r, w
    os.close(r)
    os.close(w)


def woke(r):
    try:
        return os.read(r, 16) != b""
    except BlockingIOError:
        return False


def run(fleet, pipe, timeout=60, retry=0):
    r, w = pipe
    turns = TurnWatch(fleet, w)
    started = turns.start(timeout, retry)
    if started:
        turns._thread.join(10)
    return started, woke(r)


@pytest.mark.parametrize("answer, wakes", [(Watched.CHANGED, True), (Watched.TIMED_OUT, False),
                                           (AgentError("etcd: connection refused"), True)])
def test_the_loop_is_woken_by_a_wake_up_or_a_failed_watch_not_a_timeout(pipe, answer, wakes):
    fleet = Fleet(answer)
    assert run(fleet, pipe) == (True, wakes)
    assert fleet.waits == [60]


def test_a_failed_watch_is_logged_once_while_it_keeps_failing(pipe, caplog):
    fleet = Fleet(AgentError("etcd: connection refused"))
    r, w = pipe
    turns = TurnWatch(fleet, w)
    for _ in range(3):
        turns.start(60, 0)
        turns._thread.join(10)
    assert len([m for m in caplog.messages if "connection refused" in m]) == 1


def test_an_engine_without_a_watch_leaves_the_loop_to_poll(pipe):
    fleet = Fleet(Watched.CHANGED, watches=False)
    assert run(fleet, pipe) == (False, False)
    assert fleet.waits == []
