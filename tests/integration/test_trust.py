"""Trust, like sshd's StrictModes: a config file or drop-in, a hook, a signature key
or a state dir that anyone but root could have written is refused with its path
and the reason, exit 2, and the node is left exactly as it was."""

import contextlib
import json
import os
import subprocess

import pytest

import world
from world import agent

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]

ORC = "usr/libexec/os-refresh-config"
USER = 1001  # the node's operator account


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    return world.World(str(tmp_path_factory.mktemp("trust")))


@contextlib.contextmanager
def writable(node):
    """Change the node's read-only root, as someone with a shell on it would have."""
    subprocess.run(["mount", "-o", "remount,rw", node.root], check=True)
    try:
        yield node.root
    finally:
        subprocess.run(["mount", "-o", "remount,ro", node.root], check=True)


def put(root, rel, body, mode=0o644, uid=0):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(body)
    os.chown(path, uid, uid)
    os.chmod(path, mode)
    return path


def refused(w, node, tmp_path, *words, command="apply", state_trusted=True):
    """Exit 2, one line with every word, the node byte-identical and read-only, no hook run.

    The state dir gains nothing but, if it is trusted, the status file that shows the refusal."""
    before = world.snapshot(node.root)
    state = sorted(os.listdir(os.path.join(node.root, "var/lib/update-agent")))
    r = agent(node.root, command, metadata=w.metadata_for_b(str(tmp_path)))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for word in words:
        assert word in lines[0], r.stderr
    assert world.snapshot(node.root) == before, "the root changed"
    state_dir = os.path.join(node.root, "var/lib/update-agent")
    gained = set(os.listdir(state_dir)) - set(state)
    if state_trusted and gained:
        assert gained == {"status.json"}, gained
        with open(os.path.join(state_dir, "status.json")) as f:
            assert json.load(f)["last_result"]["result"] == "refused"
    else:
        assert not gained, gained
    assert "ro" in world.root_mount_options(node.root)
    assert not os.path.exists(os.path.join(node.root, "run/hooks.log")), "a hook ran"
    return lines[0]


def test_world_writable_drop_in_of_another_user_that_repoints_preserve(w, node, tmp_path):
    with writable(node) as r:
        drop = put(r, "etc/update-agent/conf.d/50-evil.conf",
                   "[agent]\npreserve = /etc/image_id\n", 0o666, uid=1000)
    line = refused(w, node, tmp_path, "refusing config drop-in %s: it is owned by uid 1000, "
                   "not root" % drop)
    assert line.startswith("update-agent: error: ")
    assert world.read(node, "home/operator/notes") == b"operator notes\n"


def test_group_writable_config_file(w, node, tmp_path):
    with writable(node) as r:
        conf = put(r, "etc/update-agent/update-agent.conf", "[agent]\nhook_timeout = 60\n", 0o664)
    refused(w, node, tmp_path, "config file %s: it is writable by group (mode 0664)" % conf)


def test_drop_in_that_links_to_a_users_file(w, node, tmp_path):
    with writable(node) as r:
        target = put(r, "home/operator/mine.conf", "[agent]\npreserve = /etc/image_id\n", uid=USER)
        os.makedirs(os.path.join(r, "etc/update-agent/conf.d"))
        drop = os.path.join(r, "etc/update-agent/conf.d/50-linked.conf")
        os.symlink("/home/operator/mine.conf", drop)
    refused(w, node, tmp_path, "config drop-in %s: %s is owned by uid %d" % (drop, target, USER))


def test_drop_in_below_a_world_writable_directory(w, node, tmp_path):
    with writable(node) as r:
        put(r, "etc/update-agent/conf.d/50-ok.conf", "[agent]\nhook_timeout = 60\n")
        os.chmod(os.path.join(r, "etc/update-agent"), 0o777)
    refused(w, node, tmp_path, "%s is writable by group and others (mode 0777)"
            % os.path.join(node.root, "etc/update-agent"))


def test_root_owned_hook_linked_from_a_users_directory(w, node, tmp_path):
    with writable(node) as r:
        put(r, "home/operator/bin/hook", "#!/bin/sh\ntouch \"$UPDATE_AGENT_ROOT/run/owned\"\n", 0o755)
        os.chown(os.path.join(r, "home/operator/bin"), USER, USER)
        hook = os.path.join(r, ORC, "pre-configure.d/20-linked")
        os.symlink("/home/operator/bin/hook", hook)
    refused(w, node, tmp_path, "refusing hook %s: %s is owned by uid %d"
            % (hook, os.path.join(node.root, "home/operator/bin"), USER))
    assert not os.path.exists(os.path.join(node.root, "run/owned"))


def test_hook_whose_targets_directory_is_group_writable(w, node, tmp_path):
    # a post-configure hook: refused before pre-configure runs, not after the sync
    with writable(node) as r:
        put(r, "opt/hooks/activate", "#!/bin/sh\ntrue\n", 0o755)
        os.chmod(os.path.join(r, "opt/hooks"), 0o775)
        hook = os.path.join(r, ORC, "post-configure.d/20-activate")
        os.symlink("../../../../opt/hooks/activate", hook)
    refused(w, node, tmp_path, "refusing hook %s: %s is writable by group (mode 0775)"
            % (hook, os.path.join(node.root, "opt/hooks")))


def test_untrusted_signature_key(w, node, tmp_path):
    with writable(node) as r:
        key = put(r, "etc/update-agent/keys/extra.pub", "not even a key\n", 0o644, uid=1000)
    refused(w, node, tmp_path, "refusing signature key %s: it is owned by uid 1000" % key)


def test_world_writable_state_dir(w, node, tmp_path):
    state = os.path.join(node.root, "var/lib/update-agent")
    os.chmod(state, 0o777)
    refused(w, node, tmp_path, "refusing state dir %s: it is writable by group and others "
            "(mode 0777)" % state, state_trusted=False)
    refused(w, node, tmp_path, "refusing state dir %s" % state, command="check",
            state_trusted=False)


def test_state_dir_owned_by_another_user(w, node, tmp_path):
    state = os.path.join(node.root, "var/lib/update-agent")
    os.chown(state, 1000, 1000)
    refused(w, node, tmp_path, "refusing state dir %s: it is owned by uid 1000" % state,
            state_trusted=False)
    r = agent(node.root, "status")
    assert r.returncode == 2 and "refusing state dir %s" % state in r.stderr, r.stderr


def test_the_hosts_directories_above_the_root_are_not_judged(w, node, tmp_path):
    # the sandbox lives under pytest's tmp dirs (and /tmp is world-writable): host business
    os.chmod(os.path.dirname(node.root), 0o777)
    conf = tmp_path / "a.conf"
    conf.write_text("[agent]\nhook_timeout = 60\n")
    r = agent(node.root, "apply", metadata=w.metadata_for_b(str(tmp_path)), config=str(conf))
    assert r.returncode == 0, r.stderr
    assert world.read(node, "etc/image_id") == b"img-B\n"


def test_daemon_logs_the_refusal_and_keeps_its_state_untouched(w, node, tmp_path):
    with writable(node) as r:
        put(r, "etc/update-agent/keys/extra.pub", "x\n", 0o666)
    conf = tmp_path / "a.conf"
    conf.write_text("[daemon]\nsplay = 0\n")
    meta = json.load(open(w.metadata_for_b(str(tmp_path))))
    with writable(node):
        node.write_occ_cache({"meta.json": meta})
    before = world.snapshot(node.root)
    r = agent(node.root, "run", "--once", config=str(conf))
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("refusing signature key") == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert world.snapshot(node.root) == before


def test_daemon_keeps_going_past_an_untrusted_state_dir_and_updates_once_it_is_fixed(w, tmp_path):
    from daemon_helpers import NotifySocket, start_daemon, stop_daemon
    meta = json.load(open(w.metadata_for_b(str(tmp_path))))
    n = w.node(str(tmp_path), occ_mount=True, occ_cache={"heat_local.json": meta})
    state = os.path.join(n.root, "var/lib/update-agent")
    os.chmod(state, 0o777)
    conf = tmp_path / "agent.conf"
    conf.write_text("[daemon]\npoll_interval = 2\nsplay = 0\n")
    notify = NotifySocket(str(tmp_path / "notify"))
    proc = None
    try:
        before = world.snapshot(n.root)
        proc = start_daemon(n.root, str(conf), notify.path)
        notify.wait_for(lambda m: "img-B refused: refusing state dir %s" % state
                        in m.get("STATUS", ""))
        assert proc.poll() is None, "the daemon keeps running"
        assert world.snapshot(n.root) == before
        os.chmod(state, 0o755)
        notify.wait_for(lambda m: m.get("STATUS", "").startswith("img-B success"), timeout=120)
        assert world.read(n, "etc/image_id") == b"img-B\n"
        _, _, err = stop_daemon(proc)
        # logged as an error once, however many retries saw it
        errors = [ln for ln in err.splitlines() if "refusing state dir" in ln and "ERROR" in ln]
        assert len(errors) == 1, err
    finally:
        if proc is not None:
            stop_daemon(proc)
        notify.close()
        n.stop()


def test_hook_that_would_run_the_hosts_file_instead_of_the_nodes(w, node, tmp_path):
    # inside the root the link leads to a trusted hook; dib-run-parts, on this host,
    # would follow it to the host's own file of that name
    with writable(node) as r:
        put(r, "bin/true-hook", "#!/bin/sh\ntrue\n", 0o755)
        hook = os.path.join(r, ORC, "configure.d/20-host")
        os.symlink("/bin/true-hook", hook)
    refused(w, node, tmp_path, "refusing hook %s: on this host it leads to" % hook,
            "not to %s inside the node's root" % os.path.join(node.root, "bin/true-hook"))
