"""The node's own paths keep their type, on real loop-mounted nodes.

An image that turns an account database, a preserved path or a directory above
one into something else is refused before anything changes: exit 1 (a plan
refusal), one line naming the path, the node byte-identical and / read-only.
"""

import os
import shutil
import subprocess

import pytest

import world
from update_agent.apply import sync
from world import agent, write_metadata

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    return world.World(str(tmp_path_factory.mktemp("kept-types")))


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def as_dir(rel, children=("intruder",)):
    def edit(t):
        _remove(os.path.join(t, rel))
        os.makedirs(os.path.join(t, rel))
        for child in children:
            with open(os.path.join(t, rel, child), "w") as f:
                f.write("root::0:0:99999:7:::\n")
    return edit


def as_link(rel, target):
    def edit(t):
        _remove(os.path.join(t, rel))
        os.symlink(target, os.path.join(t, rel))
    return edit


def as_file(rel):
    def edit(t):
        _remove(os.path.join(t, rel))
        with open(os.path.join(t, rel), "w") as f:
            f.write("a file now\n")
    return edit


def as_fifo(rel):
    def edit(t):
        _remove(os.path.join(t, rel))
        os.mkfifo(os.path.join(t, rel))
    return edit


def as_device(rel):
    def edit(t):
        _remove(os.path.join(t, rel))
        os.mknod(os.path.join(t, rel), 0o600 | 0o020000, os.makedev(1, 3))
    return edit


def variant(w, tmp_path, name, edit):
    tree = w.tree(name, image_id=name, release=world.RELEASE, variant="B")
    if not os.path.exists(os.path.join(tree, ".edited")):
        edit(tree)
        open(os.path.join(tree, ".edited"), "w").close()
    image = w.ext4(tree, name)
    return write_metadata(str(tmp_path / "m.json"), name, world.offered(tmp_path, image), world.sha256(image))


def refused_untouched(node, meta, path, words=()):
    before = world.snapshot(node.root)
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 1, r.stderr
    # the agent's own mount of the image is reported as a foreign one (a known fault of
    # its own): only the error counts here
    lines = [ln for ln in r.stderr.strip().splitlines()
             if "mounted under the root since the plan began" not in ln]
    assert len(lines) == 1 and "Traceback" not in r.stderr and "unexpected" not in r.stderr, r.stderr
    assert path in lines[0], r.stderr
    for word in words:
        assert word in lines[0], r.stderr
    assert world.snapshot(node.root) == before, "the root changed"
    assert "ro" in world.root_mount_options(node.root)
    assert open(os.path.join(node.root, "etc/image_id")).read() == "img-A\n"
    return lines[0]


CASES = [
    # the account databases: merged as text, so regular files or nothing
    ("shadow-dir", as_dir("etc/shadow"), "/etc/shadow", ["directory"]),
    ("gshadow-dir-empty", as_dir("etc/gshadow", ()), "/etc/gshadow", ["directory"]),
    ("passwd-link-abs", as_link("etc/passwd", "/usr/share/base-passwd/passwd"), "/etc/passwd",
     ["symlink"]),
    ("shadow-link-rel", as_link("etc/shadow", "../tmp/shadow"), "/etc/shadow", ["symlink"]),
    ("group-fifo", as_fifo("etc/group"), "/etc/group", ["fifo"]),
    ("shadow-device", as_device("etc/shadow"), "/etc/shadow", ["character device"]),
    # preserved files, and a glob match
    ("hostname-dir", as_dir("etc/hostname", ("name",)), "/etc/hostname", ["directory"]),
    ("machine-id-link", as_link("etc/machine-id", "/proc/sys/kernel/random/boot_id"),
     "/etc/machine-id", ["symlink"]),
    ("hostkey-fifo", as_fifo("etc/ssh/ssh_host_ed25519_key"), "/etc/ssh/ssh_host_ed25519_key",
     ["fifo"]),
    ("hosts-device", as_device("etc/hosts"), "/etc/hosts", ["character device"]),
    ("image-id-dir", as_dir("etc/image_id"), "/etc/image_id", ["directory"]),
    # preserved directories
    ("root-file", as_file("root"), "/root", ["a file"]),
    ("var-log-link", as_link("var/log", "/tmp"), "/var/log", ["symlink"]),
    ("home-link-to-root", as_link("home", "/"), "/home", ["symlink"]),
    # a directory above a kept path
    ("ssh-dir-file", as_file("etc/ssh"), "/etc/ssh", ["holds"]),
    ("ssh-dir-link", as_link("etc/ssh", "/tmp"), "/etc/ssh", ["holds"]),
    ("var-lib-link", as_link("var/lib", "/srv/lib"), "/var/lib", ["holds"]),
]


@pytest.mark.parametrize("name, edit, path, words", CASES, ids=[c[0] for c in CASES])
def test_an_image_changing_the_type_of_a_kept_path_is_refused(
        w, node, tmp_path, name, edit, path, words):
    meta = variant(w, tmp_path, name, edit)
    refused_untouched(node, meta, path, words)


def test_the_shadow_directory_attack_leaves_the_hashes_and_the_next_run_refuses_again(
        w, node, tmp_path):
    # the attack that got through: /etc/shadow a directory in the image replaced the
    # node's file, and the next run called the node up to date
    meta = variant(w, tmp_path, "shadow-dir", as_dir("etc/shadow"))
    shadow = world.read(node, "etc/shadow")
    refused_untouched(node, meta, "/etc/shadow")
    refused_untouched(node, meta, "/etc/shadow")
    assert world.read(node, "etc/shadow") == shadow
    plan = world.plan_json(node.root, meta)
    assert plan["action"] == "refuse" and plan["changes"]["bytes"] >= 0


def _drop_from_node(node, rel):
    subprocess.run(["mount", "-o", "remount,rw", node.root], check=True)
    os.unlink(os.path.join(node.root, rel))
    subprocess.run(["mount", "-o", "remount,ro", node.root], check=True)


@pytest.mark.parametrize("name, edit", [("plain", lambda t: None),
                                        ("hostname-dir", as_dir("etc/hostname", ("name",)))])
def test_a_kept_path_the_node_lacks_is_not_created_from_the_image(w, node, tmp_path, name, edit):
    # the image's /etc/hostname is the build host's, not this node's: it stays absent
    _drop_from_node(node, "etc/hostname")
    meta = variant(w, tmp_path, name, edit) if name != "plain" else w.metadata_for_b(str(tmp_path))
    plan = world.plan_json(node.root, meta)
    assert plan["action"] == "in-place"
    assert any("absent on the node" in r and "/etc/hostname" in r for r in plan["reasons"])
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 0, r.stderr
    assert not os.path.lexists(os.path.join(node.root, "etc/hostname"))
    assert "ro" in world.root_mount_options(node.root)


def test_rsync_never_lands_a_listed_path_below_an_account_file(tmp_path):
    # belt and braces behind the plan: even a list naming etc/shadow/x leaves the file
    image, root = tmp_path / "image", tmp_path / "root"
    (image / "etc" / "shadow").mkdir(parents=True)
    (image / "etc" / "shadow" / "x").write_text("from the image")
    (image / "etc" / "motd").write_text("synced")
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "shadow").write_text("root:$6$hash:19000::::::\n")
    list_file = str(tmp_path / "list")
    sync.write_list(list_file, ["etc/shadow/x", "etc/motd"])
    argv = sync.rsync_argv(shutil.which("rsync"), list_file, (), str(image), str(root))
    subprocess.run(argv, check=True, capture_output=True)
    assert (root / "etc" / "shadow").read_text() == "root:$6$hash:19000::::::\n"
    assert (root / "etc" / "motd").read_text() == "synced"
