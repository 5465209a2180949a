"""A throwaway etcd (Debian's etcd-server) on 127.0.0.1, for tests and benchmarks."""

import contextlib
import socket
import subprocess
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("nothing listens on 127.0.0.1:%d" % port)


@contextlib.contextmanager
def etcd(data_dir, client=None, peer=None):
    """Yield the coordination URL of an etcd running in data_dir; stop it afterwards.
    A restart is etcd() again on the same data_dir and ports (client, peer)."""
    client, peer = client or free_port(), peer or free_port()
    proc = subprocess.Popen(["etcd", "--data-dir", data_dir,
                             "--listen-client-urls", "http://127.0.0.1:%d" % client,
                             "--advertise-client-urls", "http://127.0.0.1:%d" % client,
                             "--listen-peer-urls", "http://127.0.0.1:%d" % peer,
                             "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % peer,
                             "--initial-cluster", "default=http://127.0.0.1:%d" % peer],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(client)
        yield "etcd3+http://127.0.0.1:%d" % client
    finally:
        proc.terminate()
        proc.wait()
