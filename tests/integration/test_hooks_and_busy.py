"""Hooks that hang or cannot be trusted, and a root that stays busy."""

import json
import os
import signal
import subprocess
import time

import pytest

import world
from world import agent

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    return world.World(str(tmp_path_factory.mktemp("hooks")))


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open("/proc/%d/stat" % pid) as f:
        return f.read().split(")")[1].split()[0] != "Z"


def test_hanging_hook_times_out_with_its_children(w, node, tmp_path):
    conf = tmp_path / "a.conf"
    conf.write_text("[agent]\nhook_timeout = 2\n")
    open(os.path.join(node.root, "run/hang-pre-configure"), "w").close()
    before = world.snapshot(node.root)
    r = agent(node.root, "apply", metadata=w.metadata_for_b(str(tmp_path)), config=str(conf))
    assert r.returncode == 1
    assert "pre-configure" in r.stderr and "timed out after 2s" in r.stderr
    with open(os.path.join(node.root, "run/hang.pid")) as f:
        child = int(f.read())
    time.sleep(0.2)
    assert not alive(child), "the hook's child outlived the timeout"
    assert world.snapshot(node.root) == before


def test_group_writable_hook_dir_is_refused(w, node, tmp_path):
    subprocess.run(["mount", "-o", "remount,rw", node.root], check=True)
    os.chmod(os.path.join(node.root, "usr/libexec/os-refresh-config/pre-configure.d"), 0o775)
    subprocess.run(["mount", "-o", "remount,ro", node.root], check=True)
    before = world.snapshot(node.root)
    r = agent(node.root, "apply", metadata=w.metadata_for_b(str(tmp_path)))
    assert r.returncode == 2, r.stderr
    assert "pre-configure.d: it is writable by group (mode 0775)" in r.stderr
    assert world.snapshot(node.root) == before
    assert not os.path.exists(os.path.join(node.root, "run/hooks.log")), "no hook may run"


def test_busy_root_names_the_culprit_then_resumes(w, node, tmp_path):
    meta = w.metadata_for_b(str(tmp_path))
    conf = tmp_path / "a.conf"
    conf.write_text("[agent]\nremount_retries = 2\n")
    open(os.path.join(node.root, "run/hold-post-configure"), "w").close()
    r = agent(node.root, "apply", metadata=meta, config=str(conf))
    with open(os.path.join(node.root, "run/holder.pid")) as f:
        holder = int(f.read())
    try:
        assert r.returncode == 1
        line = r.stderr.strip()
        assert "remount-ro" in line and "read-only" in line
        assert "pid %d" % holder in line and "busy-file" in line and "open for writing" in line
        status = json.loads(agent(node.root, "status", "--json").stdout)
        assert status["unfinished_update"]["step"] == "remount-ro"
    finally:
        os.kill(holder, signal.SIGKILL)
    os.unlink(os.path.join(node.root, "run/hold-post-configure"))
    time.sleep(0.2)
    r = agent(node.root, "apply", metadata=meta, config=str(conf))
    assert r.returncode == 0, r.stderr
    assert "ro" in world.root_mount_options(node.root)
    assert world.plan_json(node.root, meta)["action"] == "noop"


def test_writable_environment_d_is_refused(w, node, tmp_path):
    # dib-run-parts sources environment.d/* as root before every phase
    subprocess.run(["mount", "-o", "remount,rw", node.root], check=True)
    env_dir = os.path.join(node.root, "usr/libexec/os-refresh-config/environment.d")
    os.makedirs(env_dir)
    with open(os.path.join(env_dir, "10-env"), "w") as f:
        f.write("export X=1\n")
    os.chmod(os.path.join(env_dir, "10-env"), 0o666)
    subprocess.run(["mount", "-o", "remount,ro", node.root], check=True)
    r = agent(node.root, "apply", metadata=w.metadata_for_b(str(tmp_path)))
    assert r.returncode == 2 and "environment.d/10-env: it is writable" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(node.root, "run/hooks.log"))
