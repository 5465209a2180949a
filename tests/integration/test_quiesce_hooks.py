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
    # servers: "ID STATUS" lines, the instances on this host. A live migration that
    # starts turns ACTIVE into MIGRATING, and the instance leaves after the next
    # listing; with "drain" one instance leaves per listing (moved by someone else),
    # with "never-leave" a started migration never ends; ids in "stuck" cannot start.
    "openstack": textwrap.dedent('''\
        echo "openstack $*" >> "$STANDIN/calls"
        cd "$STANDIN"
        case "$*" in
          *"service list"*"-c State"*) cat nova-state 2>/dev/null || echo up ;;
          *"service list"*) cat nova ;;
          *"--disable"*) echo disabled > nova ;;
          *"--enable"*) echo enabled > nova ;;
          *"server list"*)
            touch servers; cat servers
            sed -i '/ MIGRATING$/d' servers
            if [ -f drain ]; then sed -i 1d servers; fi ;;
          *"server migrate --live-migration "*)
            for id; do :; done
            if grep -qx "$id" stuck 2>/dev/null; then
              echo "Cannot live-migrate $id: instance is locked" >&2; exit 1
            fi
            [ -f never-leave ] || sed -i "s/^$id [A-Z]*$/$id MIGRATING/" servers ;;
          *) echo "stand-in: unexpected openstack $*" >&2; exit 64 ;;
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
    # short bounds: a hook that waits for what never comes fails the test in seconds
    e.update(UPDATE_AGENT_NOVA_POLL="0", UPDATE_AGENT_NOVA_MIGRATE_TIMEOUT="20",
             UPDATE_AGENT_NOVA_UP_TIMEOUT="20")
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
    assert not [x for x in c if x.startswith("openstack server")], c  # no reboot: instances stay
    assert state(env, "standby") == "off" and state(env, "nova") == "enabled"
    assert not os.path.exists(marker(node, "pacemaker-standby"))


def reboot(node):
    """What a reboot does to the sandbox node: /run is emptied."""
    for name in os.listdir(os.path.join(node.root, "run")):
        path = os.path.join(node.root, "run", name)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)


def marker(node, name):
    return os.path.join(node.root, "var/lib/update-agent/hooks", name)


def test_a_reboot_between_quiesce_and_undo_still_undoes(w, node, tmp_path, env):
    """The reboot path quiesces before the reboot and undoes after it: what to undo
    must outlive the reboot, which empties /run."""
    r = agent(node.root, "apply", "--json", metadata=w.meta_r(tmp_path), env=env)
    assert r.returncode == 0 and '"rebooting"' in r.stdout, r.stderr
    assert state(env, "standby") == "on" and state(env, "nova") == "disabled"
    assert os.path.exists(marker(node, "pacemaker-standby"))
    reboot(node)
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


# --- a compute about to reboot: its instances move away first --------------
DISABLE = ("openstack compute service set --disable --disable-reason update-agent: updating to img-R "
           "compute-1 nova-compute")
ENABLE = "openstack compute service set --enable compute-1 nova-compute"
STATUS = "openstack compute service list --host compute-1 --service nova-compute -f value -c Status"
UP = "openstack compute service list --host compute-1 --service nova-compute -f value -c State"
LIST = "openstack server list --all-projects --host compute-1 -f value -c ID -c Status"
MIGRATE = "openstack server migrate --live-migration "


def given(env, **files):
    for name, text in files.items():
        open(os.path.join(env["state"], name), "w").write(text)


def reboot_path(w, node, tmp_path, env):
    return agent(node.root, "apply", "--json", metadata=w.meta_r(tmp_path), env=env)


def nova_calls(env):
    return [x for x in calls(env) if x.startswith("openstack")]


def test_a_reboot_live_migrates_every_instance_then_enables_once_back(w, node, tmp_path, env):
    given(env, servers="i-1 ACTIVE\ni-2 PAUSED\n")
    r = reboot_path(w, node, tmp_path, env)
    assert r.returncode == 0 and '"rebooting"' in r.stdout, r.stderr
    # disabled first, then migrated, then polled until the host is empty
    assert nova_calls(env) == [STATUS, DISABLE, STATUS, LIST, MIGRATE + "i-1", MIGRATE + "i-2",
                               LIST, LIST]
    assert state(env, "servers") == "" and state(env, "nova") == "disabled"
    record = open(marker(node, "nova-compute-evacuated")).read()
    assert "live-migrated i-1\nlive-migrated i-2" in record
    reboot(node)
    given(env, calls="")
    r = reboot_path(w, node, tmp_path, env)
    assert r.returncode == 0 and '"success"' in r.stdout, r.stderr
    assert nova_calls(env) == [UP, ENABLE]  # enabled only once nova reports it up
    assert state(env, "nova") == "enabled"
    assert not os.path.exists(marker(node, "nova-compute-disabled"))


def test_instances_that_do_not_leave_in_time_fail_the_reboot_and_enable_again(w, node, tmp_path,
                                                                              env):
    given(env, servers="i-1 ACTIVE\ni-2 ACTIVE\n", **{"never-leave": ""})
    env = dict(env, UPDATE_AGENT_NOVA_POLL="1", UPDATE_AGENT_NOVA_MIGRATE_TIMEOUT="2")
    r = reboot_path(w, node, tmp_path, env)
    assert r.returncode == 1
    assert "instances still on compute-1 after 2 s (UPDATE_AGENT_NOVA_MIGRATE_TIMEOUT): i-1 i-2" \
        in r.stderr, r.stderr
    assert '"rebooting"' not in r.stdout
    c = nova_calls(env)
    assert c.count(LIST) >= 3, c  # it polled before it gave up
    # error.d: the node did not reboot, so it takes instances again
    assert c[-1] == ENABLE and state(env, "nova") == "enabled"


def test_an_instance_whose_migration_cannot_start_fails_at_once_naming_it(w, node, tmp_path, env):
    given(env, servers="i-1 ACTIVE\ni-2 ACTIVE\ni-3 SHUTOFF\n", stuck="i-2\n")
    r = reboot_path(w, node, tmp_path, env)
    assert r.returncode == 1
    assert "could not live-migrate off compute-1: i-2 i-3" in r.stderr, r.stderr
    assert [x for x in nova_calls(env) if x.startswith(MIGRATE)] == [MIGRATE + "i-1", MIGRATE + "i-2"]
    assert state(env, "servers") == "i-2 ACTIVE\ni-3 SHUTOFF"
    assert state(env, "nova") == "enabled"


def test_wait_mode_only_waits_until_the_host_is_empty(w, node, tmp_path, env):
    given(env, servers="i-1 ACTIVE\ni-2 ACTIVE\n", drain="")
    env = dict(env, UPDATE_AGENT_NOVA_EVACUATE="wait")
    r = reboot_path(w, node, tmp_path, env)
    assert r.returncode == 0 and '"rebooting"' in r.stdout, r.stderr
    c = nova_calls(env)
    assert not [x for x in c if x.startswith(MIGRATE)], c
    assert c[-3:] == [LIST, LIST, LIST] and c.count(LIST) == 3  # two here, one, none
    assert state(env, "servers") == ""


def test_none_mode_leaves_the_instances_alone(w, node, tmp_path, env):
    given(env, servers="i-1 ACTIVE\n")
    r = reboot_path(w, node, tmp_path, dict(env, UPDATE_AGENT_NOVA_EVACUATE="none"))
    assert r.returncode == 0 and '"rebooting"' in r.stdout, r.stderr
    assert not [x for x in nova_calls(env) if x.startswith("openstack server")]
    assert state(env, "servers") == "i-1 ACTIVE" and state(env, "nova") == "disabled"


def test_a_bad_mode_is_refused_naming_it(w, node, tmp_path, env):
    given(env, servers="i-1 ACTIVE\n")
    r = reboot_path(w, node, tmp_path, dict(env, UPDATE_AGENT_NOVA_EVACUATE="migrate"))
    assert r.returncode == 1
    assert "UPDATE_AGENT_NOVA_EVACUATE=migrate: expected live-migrate, wait or none" in r.stderr
    assert state(env, "servers") == "i-1 ACTIVE" and state(env, "nova") == "enabled"


def test_a_host_name_nova_does_not_know_fails_rather_than_reboot_its_instances(w, node, tmp_path,
                                                                             env):
    # nova knows the host by another name: nothing lists under this one
    given(env, servers="", nova="")
    r = reboot_path(w, node, tmp_path, env)
    assert r.returncode == 1
    assert "nova knows no nova-compute service on host compute-1: set UPDATE_AGENT_NOVA_HOST" \
        in r.stderr, r.stderr
    assert '"rebooting"' not in r.stdout


def test_a_compute_without_the_openstack_client_fails_rather_than_reboot_its_instances(
        w, node, tmp_path, env):
    os.unlink(os.path.join(os.path.dirname(env["state"]), "bin", "openstack"))
    r = reboot_path(w, node, tmp_path, env)
    assert r.returncode == 1
    assert "nova-compute runs here but there is no openstack client to move its instances" \
        in r.stderr, r.stderr
    assert '"rebooting"' not in r.stdout
    r = reboot_path(w, node, tmp_path, dict(env, UPDATE_AGENT_NOVA_EVACUATE="none"))
    assert r.returncode == 0 and '"rebooting"' in r.stdout, r.stderr


def test_an_operators_disable_is_left_alone_after_the_reboot(w, node, tmp_path, env):
    given(env, servers="i-1 ACTIVE\n", nova="disabled\n")
    r = reboot_path(w, node, tmp_path, env)
    assert r.returncode == 0 and '"rebooting"' in r.stdout, r.stderr
    assert MIGRATE + "i-1" in nova_calls(env)  # still moved: the node reboots all the same
    reboot(node)
    r = reboot_path(w, node, tmp_path, env)
    assert r.returncode == 0 and '"success"' in r.stdout, r.stderr
    assert not [x for x in nova_calls(env) if "--enable" in x or "--disable" in x]
    assert state(env, "nova") == "disabled"


def test_a_compute_not_up_after_the_reboot_stays_disabled(w, node, tmp_path, env):
    r = reboot_path(w, node, tmp_path, env)
    assert r.returncode == 0 and '"rebooting"' in r.stdout, r.stderr
    reboot(node)
    given(env, **{"nova-state": "down\n"})
    r = reboot_path(w, node, tmp_path, dict(env, UPDATE_AGENT_NOVA_UP_TIMEOUT="1"))
    assert r.returncode == 1
    assert "nova-compute on compute-1 not up after 1 s (UPDATE_AGENT_NOVA_UP_TIMEOUT): left disabled" \
        in r.stderr, r.stderr
    assert ENABLE not in nova_calls(env) and state(env, "nova") == "disabled"
    assert os.path.exists(marker(node, "nova-compute-disabled"))
