"""Fixtures shared by integration tests."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import etcd_local  # noqa: E402
import redis_local  # noqa: E402
import world  # noqa: E402
import zookeeper_local  # noqa: E402
from http_dir import HttpDir  # noqa: E402


@pytest.fixture
def node(w, tmp_path):
    """A sandbox node on image A, from the module's World (its `w` fixture)."""
    n = w.node(str(tmp_path))
    yield n
    n.stop()


@pytest.fixture
def http_dir(tmp_path):
    d = tmp_path / "www"
    d.mkdir()
    server = HttpDir(str(d))
    yield server
    server.close()


@pytest.fixture(scope="session", autouse=True)
def no_leaked_loop_devices(tmp_path_factory):
    """Mounts never leak: whatever loop device the tests attach is gone at the end.

    Only devices backed by this run's own files count: another process on the
    machine may attach and detach loop devices of its own at any time."""
    ours = os.path.realpath(str(tmp_path_factory.getbasetemp()))
    yield
    import time
    for _ in range(20):  # lazily unmounted filesystems release their device shortly after
        leaked = world.loop_devices_under(ours)
        if not leaked:
            return
        time.sleep(0.25)
    pytest.fail("loop devices left attached: %s" % "; ".join(leaked.values()))


# The coordination engines, one of each per test module, on 127.0.0.1 and free ports
@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    with etcd_local.etcd(str(tmp_path_factory.mktemp("etcd") / "d")) as url:
        yield url


@pytest.fixture(scope="module")
def redis_url():
    with redis_local.redis() as url:
        yield url


@pytest.fixture(scope="module")
def zookeeper(tmp_path_factory):
    if not zookeeper_local.available():
        pytest.fail("ZooKeeper is not installed (Debian's zookeeper: ./tools/setup installs it)")
    with zookeeper_local.zookeeper(str(tmp_path_factory.mktemp("zk"))) as url:
        yield url
