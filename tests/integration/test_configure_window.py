"""os-refresh-config's own run on a read-only root, for real: a metadata change without a
new image still has its configuration rendered.

The real os-refresh-config runs the node's phases with the hooks the agent ships
(pre-configure.d/00, migration.d/99 and error.d/99 `-update-agent-configure-window`),
which call the real agent: the root is writable for configure.d and read-only again
after, also when a phase fails. A root an operator made writable stays writable, and a
root an interrupted update left half-synced is never opened for configuration.
"""

import os
import subprocess
import sys

import pytest

import world
from world import agent

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]
HOOKS = os.path.join(world.PROJECT, "hooks")
WINDOW_HOOKS = ("pre-configure.d/00-update-agent-configure-window",
                "migration.d/99-update-agent-configure-window",
                "error.d/99-update-agent-configure-window")
# what os-apply-config does in configure.d: render a file into the root's /etc
RENDER = '#!/bin/sh\nset -e\necho "rendered from metadata" > "$UPDATE_AGENT_ROOT/etc/rendered.conf"\n'
FAIL = "#!/bin/sh\necho 'a post-configure hook failed' >&2\nexit 1\n"


def add_hook(root, rel, text):
    path = os.path.join(root, "usr/libexec/os-refresh-config", rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """Images A and B that carry the shipped window hooks and a configure.d that renders
    /etc, as images built with the element do."""
    w = world.World(str(tmp_path_factory.mktemp("window")))
    for name, image_id, variant in (("A-window", "img-A", "A"), ("B-window", "img-B", "B")):
        tree = w.tree(name, image_id=image_id, release=world.RELEASE, variant=variant)
        for rel in WINDOW_HOOKS:
            with open(os.path.join(HOOKS, rel)) as f:
                add_hook(tree, rel, f.read())
        add_hook(tree, "configure.d/20-render", RENDER)
    w.image_b_window = w.ext4(w.tree("B-window"), "B-window")
    return w


@pytest.fixture
def orc_node(w, tmp_path):
    """A sandbox node on A (read-only root), and how os-refresh-config runs on it."""
    node = w.node(str(tmp_path), tree=w.tree("A-window"))
    wrapper = tmp_path / "update-agent"
    wrapper.write_text('#!/bin/sh\nPYTHONPATH=%s exec %s -m update_agent "$@"\n'
                       % (os.path.join(world.PROJECT, "agent"), sys.executable))
    wrapper.chmod(0o755)
    node.orc_env = dict(os.environ, UPDATE_AGENT_ROOT=node.root, UPDATE_AGENT_BIN=str(wrapper),
                        OS_REFRESH_CONFIG_BASE_DIR=os.path.join(
                            node.root, "usr/libexec/os-refresh-config"),
                        PATH=os.path.dirname(sys.executable) + ":" + os.environ["PATH"])
    node.orc_lock = str(tmp_path / "orc.lock")
    yield node
    node.stop()


def os_refresh_config(node):
    orc = os.path.join(os.path.dirname(sys.executable), "os-refresh-config")
    return subprocess.run([orc, "--lockfile", node.orc_lock], env=node.orc_env,
                          capture_output=True, text=True, timeout=300)


def rendered(node):
    return os.path.exists(os.path.join(node.root, "etc/rendered.conf"))


def test_a_read_only_root_is_writable_for_configure_and_read_only_after(orc_node):
    assert "ro" in world.root_mount_options(orc_node.root)
    r = os_refresh_config(orc_node)
    assert r.returncode == 0, r.stderr
    assert rendered(orc_node), r.stderr
    assert "ro" in world.root_mount_options(orc_node.root)
    assert "remounted read-write for os-refresh-config" in r.stderr + r.stdout
    assert "read-only again" in r.stderr + r.stdout


def test_a_failed_phase_leaves_the_root_read_only(orc_node):
    with world.writable(orc_node.root):
        add_hook(orc_node.root, "post-configure.d/50-fail", FAIL)
    r = os_refresh_config(orc_node)
    assert r.returncode != 0
    assert "a post-configure hook failed" in r.stderr
    assert rendered(orc_node)  # configure.d ran before the failure
    assert "ro" in world.root_mount_options(orc_node.root)


def test_a_root_an_operator_made_writable_stays_writable(orc_node):
    subprocess.run(["mount", "-o", "remount,rw", orc_node.root], check=True)
    r = os_refresh_config(orc_node)
    assert r.returncode == 0, r.stderr
    assert rendered(orc_node)
    assert "rw" in world.root_mount_options(orc_node.root)
    assert "writable already: left as it is" in r.stderr + r.stdout


def test_a_half_synced_root_is_not_opened_for_configuration(w, orc_node, tmp_path):
    # an update killed between its sync and its commit: the root holds part of B
    meta = world.write_metadata(str(tmp_path / "b.json"), "img-B",
                                world.offered(str(tmp_path), w.image_b_window),
                                world.sha256(w.image_b_window))
    env = dict(os.environ, PYTHONPATH=os.path.join(world.PROJECT, "agent"),
               UPDATE_AGENT_FAULT_KILL_AT="sync:done")
    subprocess.run([sys.executable, "-m", "update_agent", "--root", orc_node.root, "--metadata",
                    meta, "apply"], env=env, start_new_session=True, capture_output=True,
                   timeout=300)
    subprocess.run(["mount", "-o", "remount,ro", orc_node.root], check=True)
    r = os_refresh_config(orc_node)
    assert r.returncode != 0
    assert "mixed: holds part of image img-B over img-A" in r.stderr, r.stderr
    assert "not opening it for os-refresh-config" in r.stderr
    assert not rendered(orc_node)
    assert "ro" in world.root_mount_options(orc_node.root)
    # the agent's next run finishes the update, and os-refresh-config then renders
    done = agent(orc_node.root, "apply", metadata=meta)
    assert done.returncode == 0, done.stderr
    assert world.read(orc_node, "etc/image_id") == b"img-B\n"
    with world.writable(orc_node.root):
        os.unlink(os.path.join(orc_node.root, "etc/rendered.conf"))  # the agent's configure.d
    r = os_refresh_config(orc_node)
    assert r.returncode == 0, r.stderr
    assert rendered(orc_node) and "ro" in world.root_mount_options(orc_node.root)


def test_the_window_command_names_a_missing_choice(orc_node):
    r = agent(orc_node.root, "configure-window")
    assert r.returncode == 2
    assert r.stderr.strip() == "update-agent: error: configure-window: give --open or --close"
    assert "ro" in world.root_mount_options(orc_node.root)
