"""The unit-test boundary: a unit test runs no command and talks to no network.

A test that needs rsync, mount or a shell belongs in tests/integration/, where
the machine's tools are checked for and everything runs in a private mount
namespace. Here, starting a process fails the test, naming it; so does a socket
to anything but this machine's loopback: AF_UNIX sockets (notify's stand-in for
systemd) and in-process HTTP servers on 127.0.0.1 stay allowed. A test that must
start a process (rarely right here) says so with @pytest.mark.allow_subprocess.
"""

import ipaddress
import os
import socket
import subprocess

import _posixsubprocess
import pytest

SPAWNERS = ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "popen",
            "execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe",
            "spawnv", "spawnve", "spawnvp", "spawnvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe")
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
ALLOW_SUBPROCESS = "allow_subprocess"  # the marker of a test that may start processes


class BoundaryCrossed(AssertionError):
    pass


def _refuse(test, what):
    def refuse(*args, **kwargs):
        program = args[0] if args else kwargs.get("args", "")
        if isinstance(program, (list, tuple)) and program:
            program = program[0]
        raise BoundaryCrossed("%s: a unit test may not %s (%r); a test that needs real "
                              "commands belongs in tests/integration/" % (test, what, program))
    return refuse


def _is_loopback(host):
    host = host.decode() if isinstance(host, bytes) else host
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:  # "" (every interface) or a name to look up
        return False


def _loopback_only(test, real):
    """Wrap a socket method taking an address (sendto's is its last argument):
    AF_UNIX and loopback addresses pass, others raise."""
    def check(sock, *args):
        address = args[-1] if real.__name__ == "sendto" else args[0]
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise BoundaryCrossed("%s: a unit test may not reach the network (%s %r); only "
                                  "127.0.0.1 and AF_UNIX sockets" % (test, real.__name__, address))
        return real(sock, *args)
    return check


def _resolve_loopback_only(test, real):
    def getaddrinfo(host, *args, **kwargs):
        if host is not None and not _is_loopback(host):
            raise BoundaryCrossed("%s: a unit test may not resolve %r (a network lookup); "
                                  "only 127.0.0.1 and localhost" % (test, host))
        return real(host, *args, **kwargs)
    return getaddrinfo


def _no_processes(test, monkeypatch):
    monkeypatch.setattr(subprocess, "Popen", _refuse(test, "start a process with subprocess"))
    # what bypasses subprocess.Popen: a reference to it or a subclass taken before the
    # test (subprocess forks through its own _fork_exec), multiprocessing
    monkeypatch.setattr(_posixsubprocess, "fork_exec", _refuse(test, "start a process"))
    if hasattr(subprocess, "_fork_exec"):
        monkeypatch.setattr(subprocess, "_fork_exec", _refuse(test, "start a process"))
    for name in SPAWNERS:
        if hasattr(os, name):
            monkeypatch.setattr(os, name, _refuse(test, "call os.%s" % name))


def _loopback_network_only(test, monkeypatch):
    for name in ("connect", "connect_ex", "bind", "sendto"):
        monkeypatch.setattr(socket.socket, name,
                            _loopback_only(test, getattr(socket.socket, name)))
    monkeypatch.setattr(socket, "getaddrinfo", _resolve_loopback_only(test, socket.getaddrinfo))


def guard(node, monkeypatch):
    """Put the boundary up for the test item node. A test marked allow_subprocess
    (as cloud-init's allow_all_subp) may start processes; none may reach the network."""
    if node.get_closest_marker(ALLOW_SUBPROCESS) is None:
        _no_processes(node.nodeid, monkeypatch)
    _loopback_network_only(node.nodeid, monkeypatch)


@pytest.fixture(autouse=True)
def no_processes_no_network(request, monkeypatch):
    guard(request.node, monkeypatch)
