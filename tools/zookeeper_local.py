"""A throwaway ZooKeeper (Debian's zookeeper package) on 127.0.0.1, for tests."""

import contextlib
import os
import shutil
import socket
import subprocess
import time

from etcd_local import free_port, wait_port

JAR = "/usr/share/java/zookeeper.jar"  # its manifest names the jars it needs


def available():
    return os.path.exists(JAR) and shutil.which("java") is not None


def wait_serving(port, timeout=60):
    """Until ZooKeeper serves sessions: its port opens a moment before it does, and
    a client that connects in between is dropped (srvr, the one four-letter word
    allowed by default, says "not currently serving requests" until then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"srvr")
                if s.recv(64).startswith(b"Zookeeper version"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("ZooKeeper on 127.0.0.1:%d does not serve requests" % port)


@contextlib.contextmanager
def zookeeper(data_dir):
    """Yield the coordination URL of a standalone ZooKeeper in data_dir; stop it afterwards."""
    os.makedirs(data_dir, exist_ok=True)
    port = free_port()
    cfg = os.path.join(data_dir, "zoo.cfg")
    with open(cfg, "w", encoding="ascii") as f:
        # a short tick: short client session timeouts are allowed (down to 2 ticks)
        f.write("tickTime=500\ndataDir=%s\nclientPort=%d\nclientPortAddress=127.0.0.1\n"
                "admin.enableServer=false\n" % (data_dir, port))
    proc = subprocess.Popen(["java", "-Xmx256m", "-cp", JAR,
                             "org.apache.zookeeper.server.ZooKeeperServerMain", cfg],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, timeout=60)
        wait_serving(port)
        yield "zookeeper://127.0.0.1:%d" % port
    finally:
        proc.terminate()
        proc.wait()
