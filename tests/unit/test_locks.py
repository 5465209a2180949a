"""The flock wait: it says once that it waits, and gives up at its deadline."""

import fcntl
import logging
import os

import pytest

from update_agent.errors import AgentError
from update_agent.state import locks


def held(path):
    """Another holder of PATH's lock (flock locks belong to the open file)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_a_wait_is_logged_once_and_ends_when_the_holder_lets_go(tmp_path, caplog):
    path = str(tmp_path / "orc.lock")
    holder = held(path)
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 5:
            os.close(holder)

    with caplog.at_level(logging.INFO, logger=locks.__name__):
        with locks.flock(path, "os-refresh-config", timeout=60, sleep=sleep):
            with open(path) as f:
                assert f.read() == "%d\n" % os.getpid()
    assert len(sleeps) == 5
    waits = [r.getMessage() for r in caplog.records if "waiting for" in r.getMessage()]
    assert waits == ["waiting for os-refresh-config (lock %s)" % path]


def test_a_lock_still_held_at_the_deadline_is_an_error_naming_it(tmp_path):
    path = str(tmp_path / "orc.lock")
    holder = held(path)
    clock = iter(range(0, 100, 10))
    try:
        with pytest.raises(AgentError, match="os-refresh-config is held by another process"):
            with locks.flock(path, "os-refresh-config", timeout=25,
                             monotonic=lambda: next(clock), sleep=lambda s: None):
                pass
    finally:
        os.close(holder)
