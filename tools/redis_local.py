"""A throwaway Redis on 127.0.0.1 for tests: no persistence, stopped afterwards."""

import contextlib
import subprocess

from etcd_local import free_port, wait_port


@contextlib.contextmanager
def redis():
    """Yield the redis:// URL of a redis-server of its own; stop it afterwards."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield "redis://127.0.0.1:%d" % port
    finally:
        proc.terminate()
        proc.wait()
