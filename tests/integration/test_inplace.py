"""In-place updates of a real node root: loop-mounted read-only ext4, real rsync,
real dib-run-parts hooks, real os-apply-config merging, the real CLI."""

import json
import os

import pytest

import world
from world import agent, plan_json, read, write_metadata

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]


@pytest.fixture(scope="session")
def w(tmp_path_factory, need_mounts):
    return world.World(str(tmp_path_factory.mktemp("world")))


def hooks_run(node):
    path = os.path.join(node.root, "run/hooks.log")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split()[0] for line in f]


def test_in_place_update_end_to_end(w, node, tmp_path):
    meta = w.metadata_for_b(str(tmp_path))
    preserved = {rel: read(node, rel) for rel in world.PRESERVED_FILES}
    state_before = read(node, "mnt/state/db/records")

    plan = plan_json(node.root, meta)
    assert plan["action"] == "in-place"
    assert plan["image_id"] == "img-B" and plan["current_image_id"] == "img-A"
    assert plan["kernel"] == {"running": world.RELEASE, "image": world.RELEASE}
    # libapp.so changed at the same size and mtime: a quick-check rsync would miss it
    assert "/usr/lib/app/libapp.so" in plan["changes"]["sample"]["changed"]
    assert "/usr/share/app-old" in plan["changes"]["sample"]["deleted"]
    assert "/usr/share/app-new/sub/more.txt" in plan["changes"]["sample"]["added"]
    assert "/etc/passwd" in plan["changes"]["sample"]["changed"]
    assert plan["changes"]["bytes"] > 0
    assert hooks_run(node) == [], "--dry-run must not run hooks"
    assert read(node, "etc/image_id") == b"img-A\n"

    r = agent(node.root, "apply", "--json", metadata=meta)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["action"] == "in-place" and out["result"] == "success"
    assert out["changes"] == plan["changes"], "apply did what the dry run predicted"

    world.assert_matches_image(node.root, w.tree_b)
    for rel, body in preserved.items():
        assert read(node, rel) == body, "preserved %s was modified" % rel
    assert read(node, "mnt/state/db/records") == state_before
    assert read(node, "etc/image_id") == b"img-B\n"
    assert "ro" in world.root_mount_options(node.root)
    assert hooks_run(node) == ["pre-configure", "configure", "post-configure", "migration", "health"]
    # accounts merged: the image's new user and the node's own user are both there
    passwd = read(node, "etc/passwd").decode()
    assert "newsvc:x:101:" in passwd and "operator:x:1001:" in passwd
    # hard links, setuid bits and absolute symlinks arrive as they are in the image
    assert os.stat(os.path.join(node.root, "usr/lib/app/libapp.so")).st_ino == \
        os.stat(os.path.join(node.root, "usr/lib/app/libapp.so.1")).st_ino
    assert os.stat(os.path.join(node.root, "usr/bin/su-helper")).st_mode & 0o4000
    assert os.readlink(os.path.join(node.root, "etc/localtime")) == "/usr/share/zoneinfo/UTC"
    assert world.loops_for(w.image_b) == ""

    status = json.loads(agent(node.root, "status", "--json").stdout)
    assert status["current_image_id"] == "img-B" and status["previous_image_id"] == "img-A"
    assert status["unfinished_update"] is None
    assert status["history"][-1]["result"] == "success"
    # where the time went, step by step, within the update's own duration
    took = status["history"][-1]["step_s"]
    assert set(took) == {"pre-configure", "remount-rw", "pin", "sync", "verify", "commit", "configure",
                         "post-configure", "migration", "restart", "remount-ro"}
    assert took["sync"] > 0 and sum(took.values()) <= status["history"][-1]["duration_s"]


def test_same_image_twice_is_noop(w, node, tmp_path):
    meta = w.metadata_for_b(str(tmp_path))
    assert agent(node.root, "apply", metadata=meta).returncode == 0
    before = world.snapshot(node.root)
    hooks_before = hooks_run(node)
    r = agent(node.root, "apply", "--json", metadata=meta)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["action"] == "noop"
    assert world.snapshot(node.root) == before
    assert hooks_run(node) == hooks_before


def test_reboot_plan_when_the_kernel_differs(w, node, tmp_path):
    tree = w.tree("img-newkernel", image_id="img-newkernel", release="9.9.9-test", variant="B")
    image = w.ext4(tree, "newkernel")
    # reboot = manual: the plan may not act on its own (the reboot path has its own tests)
    meta = write_metadata(str(tmp_path / "m.json"), "img-newkernel", world.offered(tmp_path, image),
                          world.sha256(image), reboot="manual")
    plan = plan_json(node.root, meta)
    assert plan["action"] == "reboot"
    assert plan["kernel"] == {"running": world.RELEASE, "image": "9.9.9-test"}
    assert any("differs from running kernel" in r for r in plan["reasons"])
    before = world.snapshot(node.root)
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 1 and "reboot required" in r.stderr
    assert world.snapshot(node.root) == before
    assert "ro" in world.root_mount_options(node.root)


def test_same_kernel_name_but_another_build_means_reboot(w, node, tmp_path):
    tree = w.tree("img-rebuilt", image_id="img-rebuilt", release=world.RELEASE, variant="B",
                  kernel_build=2)
    image = w.ext4(tree, "rebuilt")
    meta = write_metadata(str(tmp_path / "m.json"), "img-rebuilt", world.offered(tmp_path, image),
                          world.sha256(image))
    plan = plan_json(node.root, meta)
    assert plan["action"] == "reboot"
    assert any("different vmlinuz build" in r for r in plan["reasons"])


def test_image_without_kernel_is_refused(w, node, tmp_path):
    tree = w.tree("img-nokernel", image_id="img-nokernel", release=world.RELEASE, variant="B")
    for rel in ("vmlinuz", "boot/vmlinuz-" + world.RELEASE):
        if os.path.lexists(os.path.join(tree, rel)):
            os.unlink(os.path.join(tree, rel))
    image = w.ext4(tree, "nokernel")
    meta = write_metadata(str(tmp_path / "m.json"), "img-nokernel", world.offered(tmp_path, image),
                          world.sha256(image))
    plan = plan_json(node.root, meta)
    assert plan["action"] == "refuse"
    assert any("no kernel" in r for r in plan["reasons"])
    before = world.snapshot(node.root)
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 1 and "no kernel" in r.stderr
    assert world.snapshot(node.root) == before


def test_bad_digest_changes_nothing(w, node, tmp_path):
    meta = write_metadata(str(tmp_path / "m.json"), "img-B", world.offered(tmp_path, w.image_b),
                          "sha256:" + "0" * 64)
    before = world.snapshot(node.root)
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 1
    assert "digest mismatch" in r.stderr and "sha256:" + "0" * 64 in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert world.snapshot(node.root) == before
    images = os.path.join(node.root, "var/lib/update-agent/images")
    assert [n for n in os.listdir(images) if n.endswith((".img", ".part"))] == []


@pytest.mark.parametrize("metadata, words", [
    ({}, ["'image_id'", "missing"]),
    ({"image_id": 42}, ["'image_id'", "int", "42"]),
    ({"image_id": "img; rm -rf /"}, ["'image_id'", "img; rm -rf /"]),
    ({"image_id": "../../etc"}, ["'image_id'", "../../etc"]),
    ({"image_id": "img-B", "update_agent": {"image_url": "file:///x", "image_digest": "md5:abcd"}},
     ["image_digest", "md5:abcd", "sha256:<64 hex digits>"]),
    ({"image_id": "img-B", "update_agent": {"image_url": "ftp://host/x.img"}},
     ["image_url", "ftp://host/x.img", "scheme"]),
    ({"image_id": "img-B", "update_agent": {"image_url": "file:///x", "reboot": "sometimes"}},
     ["reboot", "sometimes"]),
    ({"image_id": "img-B", "update_agent": "not-an-object"}, ["'update_agent'", "str"]),
    ({"image_id": "img-B"}, ["no image URL", "img-B"]),
])
def test_malformed_metadata_exits_2_and_changes_nothing(node, tmp_path, metadata, words):
    meta = str(tmp_path / "m.json")
    with open(meta, "w") as f:
        json.dump(metadata, f)
    before = world.snapshot(node.root)
    for args in (("--dry-run",), ("apply",)):
        r = agent(node.root, *args, metadata=meta)
        assert r.returncode == 2, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        for word in words:
            assert word in r.stderr
    assert world.snapshot(node.root) == before


def test_metadata_that_is_not_json_exits_2(node, tmp_path):
    meta = tmp_path / "m.json"
    meta.write_text("{not json")
    r = agent(node.root, "--dry-run", metadata=str(meta))
    assert r.returncode == 2 and str(meta) in r.stderr


def test_failing_pre_configure_hook_leaves_root_untouched(w, node, tmp_path):
    meta = w.metadata_for_b(str(tmp_path))
    open(os.path.join(node.root, "run/fail-pre-configure"), "w").close()
    before = world.snapshot(node.root)
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 1
    assert "pre-configure" in r.stderr and "told to fail" in r.stderr
    assert world.snapshot(node.root) == before
    assert "ro" in world.root_mount_options(node.root)
    assert hooks_run(node) == ["pre-configure", "error"]


def test_interrupted_apply_resumes_where_it_stopped(w, node, tmp_path):
    meta = w.metadata_for_b(str(tmp_path))
    marker = os.path.join(node.root, "run/fail-configure")
    open(marker, "w").close()
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 1 and "configure" in r.stderr
    # the sync and the commit happened; configure failed; / is read-only again
    assert read(node, "etc/image_id") == b"img-B\n"
    assert "ro" in world.root_mount_options(node.root)
    status = json.loads(agent(node.root, "status", "--json").stdout)
    assert status["unfinished_update"]["step"] == "configure"

    plan = plan_json(node.root, meta)
    assert plan["action"] == "in-place", "an unfinished update is resumed, not a no-op"
    assert plan["resume"] is True
    assert any("resuming" in r for r in plan["reasons"])

    os.unlink(marker)
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 0, r.stderr
    # pre-configure is not repeated once the sync is done; configure runs again
    assert hooks_run(node) == ["pre-configure", "configure", "error",
                               "configure", "post-configure", "migration", "health"]
    world.assert_matches_image(node.root, w.tree_b)
    assert "ro" in world.root_mount_options(node.root)
    assert plan_json(node.root, meta)["action"] == "noop"


def test_root_without_image_id_needs_adopt(w, tmp_path):
    tree = w.tree("plain", image_id="plain", release=world.RELEASE, variant="A")
    os.unlink(os.path.join(tree, "etc/image_id"))
    n = w.node(str(tmp_path), tree=tree)
    try:
        meta = w.metadata_for_b(str(tmp_path))
        plan = plan_json(n.root, meta)
        assert plan["action"] == "refuse" and any("--adopt" in r for r in plan["reasons"])
        assert agent(n.root, "apply", metadata=meta).returncode == 1
        r = agent(n.root, "apply", "--adopt", metadata=meta)
        assert r.returncode == 0, r.stderr
        assert read(n, "etc/image_id") == b"img-B\n"
    finally:
        n.stop()


def test_account_clash_is_refused(w, node, tmp_path):
    # the node created a user whose uid the new image gives to another user
    tree = w.tree("img-clash", image_id="img-clash", release=world.RELEASE, variant="B")
    with open(os.path.join(tree, "etc/passwd"), "a") as f:
        f.write("dbsvc:x:1001:1001::/nonexistent:/usr/sbin/nologin\n")
    image = w.ext4(tree, "clash")
    meta = write_metadata(str(tmp_path / "m.json"), "img-clash", world.offered(tmp_path, image),
                          world.sha256(image))
    plan = plan_json(node.root, meta)
    assert plan["action"] == "refuse"
    assert any("1001" in r and "operator" in r and "dbsvc" in r for r in plan["reasons"])


def test_http_image_and_url_template(w, node, tmp_path, http_dir):
    http_dir.serve(w.image_b, "img-B.ext4")
    conf = tmp_path / "agent.conf"
    conf.write_text("[agent]\nimage_url_template = %s/{image_id}.ext4\n" % http_dir.url)
    meta = write_metadata(str(tmp_path / "m.json"), "img-B", digest=world.sha256(w.image_b))
    r = agent(node.root, "apply", "--json", metadata=meta, config=str(conf))
    assert r.returncode == 0, r.stderr
    world.assert_matches_image(node.root, w.tree_b)


def test_default_source_is_the_os_collect_config_cache(w, tmp_path):
    # os_config_files.json names node paths: they are read under --root
    cache = {"heat_local.json": {"image_id": "img-B",
                                 "update_agent": {"image_url": world.offered(tmp_path, w.image_b)}},
             "ec2.json": {"update_agent": {"image_digest": world.sha256(w.image_b)}}}
    n = w.node(str(tmp_path), occ_cache=cache)
    try:
        plan = json.loads(agent(n.root, "--dry-run", "--json").stdout)
        assert plan["action"] == "in-place" and plan["image_id"] == "img-B"
    finally:
        n.stop()


def test_state_dir_on_the_read_only_root_is_refused(w, tmp_path):
    n = w.node(str(tmp_path), state_mount=False)
    try:
        plan = plan_json(n.root, w.metadata_for_b(str(tmp_path)))
        assert plan["action"] == "refuse"
        assert any("read-only root" in r for r in plan["reasons"])
    finally:
        n.stop()


def _variant(w, tmp_path, name, edit):
    tree = w.tree(name, image_id=name, release=world.RELEASE, variant="B")
    edit(tree)
    image = w.ext4(tree, name)
    return tree, write_metadata(str(tmp_path / "m.json"), name, world.offered(tmp_path, image), world.sha256(image))


def test_directory_holding_a_preserved_glob_match_is_kept(w, node, tmp_path):
    # the image drops /etc/ssh; the node's host key (preserved by /etc/ssh/ssh_host_*) stays
    import shutil
    _, meta = _variant(w, tmp_path, "img-nossh", lambda t: shutil.rmtree(os.path.join(t, "etc/ssh")))
    key = read(node, "etc/ssh/ssh_host_ed25519_key")
    plan = plan_json(node.root, meta)
    assert plan["action"] == "in-place"
    assert "/etc/ssh" in plan["changes"]["kept"]
    assert "/etc/ssh/sshd_config" in plan["changes"]["sample"]["deleted"]
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 0, r.stderr
    assert read(node, "etc/ssh/ssh_host_ed25519_key") == key
    assert os.listdir(os.path.join(node.root, "etc/ssh")) == ["ssh_host_ed25519_key"]


def test_image_replacing_a_preserved_parent_with_a_symlink_is_refused(w, node, tmp_path):
    import shutil

    def edit(t):
        shutil.rmtree(os.path.join(t, "etc/ssh"))
        os.symlink("/tmp", os.path.join(t, "etc/ssh"))
    _, meta = _variant(w, tmp_path, "img-sshlink", edit)
    plan = plan_json(node.root, meta)
    assert plan["action"] == "refuse"
    assert any("/etc/ssh" in r and "symlink" in r for r in plan["reasons"])
    before = world.snapshot(node.root)
    assert agent(node.root, "apply", metadata=meta).returncode == 1
    assert world.snapshot(node.root) == before


def test_agent_killed_mid_update_resumes_and_leaves_root_read_only(w, node, tmp_path):
    import signal
    import subprocess
    import sys
    import time
    meta = w.metadata_for_b(str(tmp_path))
    open(os.path.join(node.root, "run/hang-configure"), "w").close()
    env = dict(os.environ, PYTHONPATH=os.path.join(world.PROJECT, "agent"))
    proc = subprocess.Popen([sys.executable, "-m", "update_agent", "--root", node.root,
                             "--metadata", meta, "apply"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pidfile = os.path.join(node.root, "run/hang.pid")
    deadline = time.monotonic() + 60
    while not os.path.exists(pidfile) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the agent and everything in its group
    proc.wait()
    with open(pidfile) as f:
        os.kill(int(f.read()), signal.SIGKILL)  # the hanging hook's own child
    time.sleep(0.2)
    # killed in configure: the root was left writable, the journal says where it stopped
    assert "rw" in world.root_mount_options(node.root)
    status = json.loads(agent(node.root, "status", "--json").stdout)
    assert status["unfinished_update"]["step"] == "configure"
    assert status["unfinished_update"]["status"] == "running"

    os.unlink(os.path.join(node.root, "run/hang-configure"))
    plan = plan_json(node.root, meta)
    assert plan["action"] == "in-place" and plan["resume"] and plan["root_was_read_only"]
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 0, r.stderr
    assert "ro" in world.root_mount_options(node.root), "the journal remembered / was read-only"
    world.assert_matches_image(node.root, w.tree_b)


def test_accounts_three_way_and_labels(w, node, tmp_path):
    # B adds newsvc; C drops it again and labels /etc/passwd: after A -> B -> C the
    # node keeps its own operator, loses newsvc, and passwd carries C's xattr
    assert agent(node.root, "apply", metadata=w.metadata_for_b(str(tmp_path))).returncode == 0
    tree = w.tree("img-C", image_id="img-C", release=world.RELEASE, variant="B")
    passwd = os.path.join(tree, "etc/passwd")
    with open(passwd) as f:
        kept = [line for line in f if not line.startswith("newsvc:")]
    with open(passwd, "w") as f:
        f.writelines(kept)
    os.setxattr(passwd, "user.label", b"etc_passwd_t")
    os.utime(passwd, (sandbox_epoch(), sandbox_epoch()))
    image = w.ext4(tree, "C")
    meta = write_metadata(str(tmp_path / "c.json"), "img-C", world.offered(tmp_path, image), world.sha256(image))
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 0, r.stderr
    text = read(node, "etc/passwd").decode()
    assert "operator:x:1001:" in text and "newsvc:" not in text
    assert os.getxattr(os.path.join(node.root, "etc/passwd"), "user.label") == b"etc_passwd_t"


def sandbox_epoch():
    import sandbox
    return sandbox.EPOCH
