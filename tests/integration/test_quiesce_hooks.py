"""The quiesce hooks shipped in hooks/, run by the real agent on a sandbox node.

Pacemaker and nova-compute cannot run here (no cluster, no OpenStack API), so
their commands (crm_node, crm_attribute, crm_resource, openstack, systemctl,
hostname) are recording stand-ins that keep the state the real ones would
change: the node's standby attribute and the compute service's status. The
hooks are the shipped files, unchanged.
"""

import os
import shutil
import subprocess
import textwrap

import pytest

import world
from world import agent

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]

HOOKS = os.path.join(world.PROJECT, "hooks")
STANDINS = {
    "crm_node": 'echo node-1',
    "crm_attribute": textwrap.dedent('''\
        echo "crm_attribute $*" >> "$STANDIN/calls"
        case "$*" in
          *--query*) cat "$STANDIN/standby" 2>/dev/null || echo off ;;
          *"--update on"*) echo on > "$STANDIN/standby" ;;
          *"--update off"*) echo off > "$STANDIN/standby" ;;
        esac'''),
    "crm_resource": 'echo "crm_resource $*" >> "$STANDIN/calls"',
    "openstack": textwrap.dedent('''\
        echo "openstack $*" >> "$STANDIN/calls"
        case "$*" in
          *"service list"*) cat "$STANDIN/nova" ;;
          *"--disable"*) echo disabled > "$STANDIN/nova" ;;
          *"--enable"*) echo enabled > "$STANDIN/nova" ;;
        esac'''),
    "systemctl": '[ "$*" = "is-active --quiet nova-compute.service" ] && exit 0; exit 1',
    "hostname": 'echo compute-1',
}


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    base = str(tmp_path_factory.mktemp("quiesce"))
    w = world.World(base)
    # both images carry the hooks, as images built with the element do: the undo
    # in post-configure.d runs from the new image
    trees = {}
    # R: the same kernel name, another build: the reboot path
    for name, image_id, variant, build in (("A-hooks", "img-A", "A", 1), ("B-hooks", "img-B", "B", 1),
                                           ("R-hooks", "img-R", "R", 2)):
        tree = trees[variant] = w.tree(name, image_id=image_id, release=world.RELEASE,
                                       variant=variant.replace("R", "B"), kernel_build=build)
        for phase in ("pre-configure.d", "post-configure.d", "error.d"):
            for hook in os.listdir(os.path.join(HOOKS, phase)):
                shutil.copy2(os.path.join(HOOKS, phase, hook),
                             os.path.join(tree, "usr/libexec/os-refresh-config", phase, hook))
    w.tree_with_hooks = trees["A"]
    image = w.ext4(trees["B"], "B-hooks")
    w.meta_b = lambda tmp: world.write_metadata(str(tmp / "m.json"), "img-B", world.offered(tmp, image),
                                                world.sha256(image))
    rebuilt = w.ext4(trees["R"], "R-hooks")
    w.meta_r = lambda tmp: world.write_metadata(str(tmp / "r.json"), "img-R", world.offered(tmp, rebuilt),
                                                world.sha256(rebuilt))
    return w


@pytest.fixture
def env(tmp_path):
    bin_dir, state = tmp_path / "bin", tmp_path / "standin"
    bin_dir.mkdir()
    state.mkdir()
    for name, body in STANDINS.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body + "\n")
        (bin_dir / name).chmod(0o755)
    (state / "nova").write_text("enabled\n")
    (state / "calls").write_text("")
    e = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ["PATH"]), STANDIN=str(state))
    e["state"] = str(state)
    return e


@pytest.fixture
def node(w, tmp_path):
    n = w.node(str(tmp_path), tree=w.tree_with_hooks)
    yield n
    n.stop()


def calls(env):
    return open(os.path.join(env["state"], "calls")).read().splitlines()


def state(env, name):
    try:
        return open(os.path.join(env["state"], name)).read().strip()
    except FileNotFoundError:
        return "off"


def test_update_quiesces_and_resumes(w, node, tmp_path, env):
    r = agent(node.root, "apply", metadata=w.meta_b(tmp_path), env=env)
    assert r.returncode == 0, r.stderr
    c = calls(env)
    assert "crm_attribute --node node-1 --name standby --update on" in c
    assert "crm_attribute --node node-1 --name standby --update off" in c
    assert c.index("crm_attribute --node node-1 --name standby --update on") < \
        c.index("crm_attribute --node node-1 --name standby --update off")
    assert sum(x.startswith("crm_resource --wait") for x in c) == 2
    assert any("--disable" in x and "update-agent: updating to img-B" in x for x in c)
    assert any(x.endswith("--enable compute-1 nova-compute") for x in c)
    assert state(env, "standby") == "off" and state(env, "nova") == "enabled"
    assert not os.path.exists(marker(node, "pacemaker-standby"))


def marker(node, name):
    return os.path.join(node.root, "var/lib/update-agent/hooks", name)


def test_a_reboot_between_quiesce_and_undo_still_undoes(w, node, tmp_path, env):
    """The reboot path quiesces before the reboot and undoes after it: what to undo
    must outlive the reboot, which empties /run."""
    r = agent(node.root, "apply", "--json", metadata=w.meta_r(tmp_path), env=env)
    assert r.returncode == 0 and '"rebooting"' in r.stdout, r.stderr
    assert state(env, "standby") == "on" and state(env, "nova") == "disabled"
    assert os.path.exists(marker(node, "pacemaker-standby"))
    for name in os.listdir(os.path.join(node.root, "run")):  # the reboot
        path = os.path.join(node.root, "run", name)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
    r = agent(node.root, "apply", "--json", metadata=w.meta_r(tmp_path), env=env)
    assert r.returncode == 0 and '"success"' in r.stdout, r.stderr
    assert state(env, "standby") == "off" and state(env, "nova") == "enabled"
    assert not os.path.exists(marker(node, "pacemaker-standby"))


def test_an_operators_standby_and_disable_are_left_alone(w, node, tmp_path, env):
    open(os.path.join(env["state"], "standby"), "w").write("on\n")
    open(os.path.join(env["state"], "nova"), "w").write("disabled\n")
    r = agent(node.root, "apply", metadata=w.meta_b(tmp_path), env=env)
    assert r.returncode == 0, r.stderr
    c = calls(env)
    assert not [x for x in c if "--update" in x or "--enable" in x or "--disable" in x], c
    assert state(env, "standby") == "on" and state(env, "nova") == "disabled"


def test_a_failed_update_undoes_the_quiesce_in_error_d(w, node, tmp_path, env):
    open(os.path.join(node.root, "run/fail-configure"), "w").close()
    r = agent(node.root, "apply", metadata=w.meta_b(tmp_path), env=env)
    assert r.returncode == 1
    c = calls(env)
    assert "crm_attribute --node node-1 --name standby --update off" in c
    assert state(env, "standby") == "off" and state(env, "nova") == "enabled"


def test_os_refresh_config_runs_without_an_update_do_nothing(w, node, env):
    # os-refresh-config runs pre-configure.d on every config change: no UPDATE_AGENT_ACTION
    e = {k: v for k, v in env.items() if not k.startswith("UPDATE_AGENT_")}
    e["UPDATE_AGENT_ROOT"] = node.root
    phase = os.path.join(node.root, "usr/libexec/os-refresh-config/pre-configure.d")
    dib = subprocess.run(["sh", "-c", "command -v dib-run-parts"], capture_output=True, text=True,
                         env=dict(e, PATH=os.path.dirname(world.sys.executable) + ":" + e["PATH"]))
    r = subprocess.run([dib.stdout.strip(), phase], capture_output=True, text=True, env=e)
    assert r.returncode == 0, r.stderr
    assert calls(env) == []
