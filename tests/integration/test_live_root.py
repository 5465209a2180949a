"""A node whose processes run code the sync replaces: predicted, pinned so that /
goes read-only again, reported; Python services judged by what they import."""

import json
import os
import signal
import subprocess
import sys

import pytest

import world
from update_agent.node import busy
from world import agent, plan_json

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]

MAP_AND_WAIT = ("import mmap, sys, time\n"
                "f = open(sys.argv[1], 'rb')\n"
                "m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\n"
                "f.close()\n"
                "print('mapped', flush=True)\n"
                "time.sleep(300)\n")
# a replaced file only held open (read, not mapped) keeps its inode too, and so
# blocks remount,ro just the same
OPEN_AND_WAIT = ("import sys, time\n"
                 "f = open(sys.argv[1], 'rb')\n"
                 "print('mapped', flush=True)\n"
                 "time.sleep(300)\n")


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    return world.World(str(tmp_path_factory.mktemp("live")))


def start(argv, **kw):
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, **kw)
    assert proc.stdout.readline().strip() in ("mapped", "ready")
    return proc


def stop(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("how", [MAP_AND_WAIT, OPEN_AND_WAIT], ids=["mapped", "open"])
def test_a_process_using_a_replaced_library_is_pinned_and_reported(w, node, tmp_path, how):
    lib = os.path.join(node.root, "usr/lib/app/libapp.so")
    old_ino = os.stat(lib).st_ino
    holder = start([sys.executable, "-c", how, lib])
    try:
        meta = w.metadata_for_b(str(tmp_path))
        plan = plan_json(node.root, meta)
        outside = plan["restarts"]["outside_units"]
        assert [o["pid"] for o in outside] == [holder.pid], plan["restarts"]
        assert any("restart" in r and str(holder.pid) in r for r in plan["reasons"])

        r = agent(node.root, "apply", metadata=meta)
        assert r.returncode == 0, r.stderr
        # without the pin, Linux refuses remount,ro while the old inode is mapped
        assert "ro" in world.root_mount_options(node.root)
        pinned = os.path.join(node.root, ".update-agent-pinned", str(old_ino))
        assert os.path.exists(pinned)
        assert os.stat(lib).st_ino != old_ino, "the library itself was replaced"
        # the old inode is linked, so it keeps nothing busy: not named when a remount fails
        assert not [c for c in busy.culprits(node.root) if c[0] == holder.pid]
        hist = json.loads(agent(node.root, "history", "--json").stdout)
        still = hist[-1]["restarts"]["still_old"]
        assert any("[%d]" % holder.pid in s and "libapp.so" in s for s in still), still
        assert holder.poll() is None, "the agent never kills what it cannot restart"
    finally:
        stop(holder)
    # the next update drops the pin that nothing uses any more
    tree = w.tree("img-C", image_id="img-C", release=world.RELEASE, variant="B")
    with open(os.path.join(tree, "usr/share/doc/app/README"), "a") as f:
        f.write("more\n")
    image = w.ext4(tree, "C")
    meta_c = world.write_metadata(str(tmp_path / "c.json"), "img-C", world.offered(tmp_path, image),
                                  world.sha256(image))
    r = agent(node.root, "apply", metadata=meta_c)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(os.path.join(node.root, ".update-agent-pinned"))


PY_SERVICE = ("import sys, time\n"
              "sys.path.insert(0, sys.argv[1])\n"
              "import appmod\n"
              "print('ready', flush=True)\n"
              "time.sleep(300)\n")


def test_a_python_service_whose_module_changed_is_found(w, tmp_path):
    # the service's module is read and closed: no map shows it, its import does
    tree_a = w.tree("py-A", image_id="img-A", release=world.RELEASE, variant="A")
    tree_b = w.tree("py-B", image_id="py-B", release=world.RELEASE, variant="B")
    for tree, version in ((tree_a, 1), (tree_b, 2)):
        os.makedirs(os.path.join(tree, "opt/svc"), exist_ok=True)
        with open(os.path.join(tree, "opt/svc/service.py"), "w") as f:
            f.write(PY_SERVICE)
        with open(os.path.join(tree, "opt/svc/appmod.py"), "w") as f:
            f.write("VERSION = %d\n" % version)
    image = w.ext4(tree_b, "py-B")
    meta = world.write_metadata(str(tmp_path / "m.json"), "py-B", world.offered(tmp_path, image),
                                world.sha256(image))
    n = w.node(str(tmp_path), tree=tree_a)
    svc = None
    try:
        # a service working in the node (the sandbox has no interpreter of its own)
        svc = start([sys.executable, os.path.join(n.root, "opt/svc/service.py"),
                     os.path.join(n.root, "opt/svc")], cwd=n.root)
        plan = plan_json(n.root, meta)
        outside = plan["restarts"]["outside_units"]
        assert [o["pid"] for o in outside] == [svc.pid], plan
    finally:
        if svc:
            stop(svc)
        n.stop()
