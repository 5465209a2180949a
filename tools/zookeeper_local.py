"""A throwaway ZooKeeper (Debian's zookeeper package) on 127.0.0.1, for tests."""

import contextlib
import os
import shutil
import subprocess

from etcd_local import free_port, wait_port

JAR = "/usr/share/java/zookeeper.jar"  # its manifest names the jars it needs


def available():
    return os.path.exists(JAR) and shutil.which("java") is not None


@contextlib.contextmanager
def zookeeper(data_dir):
    """Yield the tooz URL of a standalone ZooKeeper in data_dir; stop it afterwards."""
    os.makedirs(data_dir, exist_ok=True)
    port = free_port()
    cfg = os.path.join(data_dir, "zoo.cfg")
    with open(cfg, "w", encoding="ascii") as f:
        # a short tick: tooz's session timeout (a lease slot's TTL) may go down to 2 ticks
        f.write("tickTime=500\ndataDir=%s\nclientPort=%d\nclientPortAddress=127.0.0.1\n"
                "admin.enableServer=false\n" % (data_dir, port))
    proc = subprocess.Popen(["java", "-Xmx256m", "-cp", JAR,
                             "org.apache.zookeeper.server.ZooKeeperServerMain", cfg],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, timeout=60)
        yield "zookeeper://127.0.0.1:%d" % port
    finally:
        proc.terminate()
        proc.wait()
