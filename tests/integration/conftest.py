"""Fixtures shared by integration tests."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import world  # noqa: E402
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
def no_leaked_loop_devices():
    """Mounts never leak: whatever loop device the tests attach is gone at the end."""
    before = set(world.loop_devices())
    yield
    import time
    for _ in range(20):  # lazily unmounted filesystems release their device shortly after
        leaked = {k: v for k, v in world.loop_devices().items() if k not in before}
        if not leaked:
            return
        time.sleep(0.25)
    pytest.fail("loop devices left attached: %s" % "; ".join(leaked.values()))
