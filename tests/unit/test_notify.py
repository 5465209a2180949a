"""notify.Notifier against a real AF_UNIX datagram socket standing in for systemd."""

import os
import socket
import time
import uuid

import pytest

from update_agent.daemon import notify


@pytest.fixture
def sd(tmp_path):
    path = str(tmp_path / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2)
    yield s, path
    s.close()


def recv(s, timeout=2):
    s.settimeout(timeout)
    return s.recv(4096).decode()


def nothing_arrives(s, wait=0.1):
    s.settimeout(wait)
    with pytest.raises(socket.timeout):
        s.recv(4096)
    return True


def test_ready_status_stopping(sd):
    s, path = sd
    n = notify.Notifier(environ={"NOTIFY_SOCKET": path})
    assert n.enabled
    n.ready("idle, watching")
    assert recv(s) == "READY=1\nSTATUS=idle, watching"
    n.status("checking img-2")
    assert recv(s) == "STATUS=checking img-2"
    n.stopping()
    assert recv(s) == "STOPPING=1"


def test_status_dedups_consecutive(sd):
    s, path = sd
    n = notify.Notifier(environ={"NOTIFY_SOCKET": path})
    n.ready("idle")
    recv(s)
    n.status("idle")  # same as READY's status
    n.status("a")
    n.status("a")
    n.status("b")
    n.status("a")
    assert [recv(s) for _ in range(3)] == ["STATUS=a", "STATUS=b", "STATUS=a"]
    assert nothing_arrives(s)


def test_watchdog_pings_at_half_interval_until_stopped(sd):
    s, path = sd
    n = notify.Notifier(environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000",
                                 "WATCHDOG_PID": str(os.getpid())})
    start = time.monotonic()
    n.start_watchdog()
    try:
        assert [recv(s) for _ in range(4)] == ["WATCHDOG=1"] * 4
        elapsed = time.monotonic() - start
    finally:
        n.stop_watchdog()
    assert 0.19 <= elapsed < 0.38  # 4 pings every 50 ms, not every 100 ms
    try:
        while True:
            recv(s, timeout=0.01)  # at most one ping was in flight
    except socket.timeout:
        pass
    assert nothing_arrives(s, 0.15)


def test_watchdog_for_another_pid_is_disabled(sd):
    s, path = sd
    n = notify.Notifier(environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000",
                                 "WATCHDOG_PID": str(os.getpid() + 1)})
    assert n.watchdog_usec == 0
    n.start_watchdog()
    assert nothing_arrives(s, 0.1)
    n.stop_watchdog()


def test_abstract_socket():
    name = "update-agent-test-%s" % uuid.uuid4().hex
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    try:
        notify.Notifier(environ={"NOTIFY_SOCKET": "@" + name}).ready("up")
        assert recv(s) == "READY=1\nSTATUS=up"
    finally:
        s.close()


def test_without_notify_socket_everything_is_a_noop(monkeypatch):
    def no_socket(*a, **kw):
        raise AssertionError("a socket was opened")
    monkeypatch.setattr(notify.socket, "socket", no_socket)
    n = notify.Notifier(environ={"WATCHDOG_USEC": "10000"})
    assert not n.enabled
    n.ready()
    n.status("x")
    n.stopping()
    n.start_watchdog()
    time.sleep(0.03)
    n.stop_watchdog()


def test_send_to_missing_socket_does_not_raise(tmp_path):
    notify.Notifier(environ={"NOTIFY_SOCKET": str(tmp_path / "gone")}).ready()
