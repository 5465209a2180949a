"""The unit suite's boundary (conftest.py) holds: no process, no network but loopback."""

import os
import socket
import subprocess
import types

import pytest

# taken before any test's guard is in place, as a module doing `from subprocess
# import Popen` would
EARLY_POPEN = subprocess.Popen
EARLY_SYSTEM = os.system
REFUSED = "a unit test may not"


def test_running_a_command_fails_the_test_and_names_it(request):
    with pytest.raises(AssertionError, match=REFUSED) as e:
        subprocess.run(["true"], check=True)
    assert request.node.nodeid in str(e.value) and "'true'" in str(e.value)
    assert "tests/integration/" in str(e.value)


# each would only run `true` if the guard failed to stop it
@pytest.mark.parametrize("spawn", [lambda: os.system("true"),
                                   lambda: os.posix_spawn("/bin/true", ["true"], {}),
                                   lambda: EARLY_POPEN(["true"]).wait()])
def test_every_way_of_starting_a_process_is_refused(spawn):
    with pytest.raises(AssertionError, match=REFUSED):
        spawn()


def test_a_network_address_is_refused():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        with pytest.raises(AssertionError, match=REFUSED):
            s.connect(("192.0.2.1", 80))   # TEST-NET-1: would never answer anyway
    with pytest.raises(AssertionError, match=REFUSED):
        socket.getaddrinfo("images.example", 443)


def test_loopback_and_unix_sockets_still_work():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"ping")
        assert b.recv(4) == b"ping"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            conn, _ = server.accept()
            conn.close()


@pytest.mark.allow_subprocess
def test_a_marked_test_may_start_processes_but_still_not_reach_the_network():
    assert subprocess.Popen is EARLY_POPEN and os.system is EARLY_SYSTEM
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        with pytest.raises(AssertionError, match=REFUSED):
            s.connect(("192.0.2.1", 80))


def _guard(request):
    """conftest.py's guard (two conftest modules share that name: found by its file)."""
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conftest.py")
    return next(p for p in request.config.pluginmanager.get_plugins()
                if getattr(p, "__file__", None) == here).guard


def _item(marked):
    return types.SimpleNamespace(
        nodeid="tests/unit/test_x.py::test_x",
        get_closest_marker=lambda name: object() if marked and name == "allow_subprocess" else None)


@pytest.mark.allow_subprocess  # so that what the guard does here is all its own
def test_the_guard_refuses_processes_to_an_unmarked_test_only(request):
    guard = _guard(request)
    with pytest.MonkeyPatch.context() as mp:
        guard(_item(marked=False), mp)
        with pytest.raises(AssertionError, match=REFUSED) as e:
            subprocess.run(["true"], check=True)
        assert "test_x.py::test_x" in str(e.value)
    with pytest.MonkeyPatch.context() as mp:
        guard(_item(marked=True), mp)
        assert subprocess.Popen is EARLY_POPEN and os.system is EARLY_SYSTEM
