"""Verify before commit: after the sync, every path of the change set must match
the image's manifest, or the step fails, the root is reported mixed and
/etc/image_id still names the old image; the next run converges."""

import json
import os
import shutil
import subprocess

import pytest

import sandbox
import world
from world import agent, read, write_metadata
from update_agent.apply import sync

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]

COMMENT_LIKE = ("#notes", ";semi", "#dir/inside")


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    return world.World(str(tmp_path_factory.mktemp("verify")))


def hooks_run(node):
    path = os.path.join(node.root, "run/hooks.log")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split()[0] for line in f]


def test_write_list_makes_rsync_transfer_names_that_begin_like_comments(tmp_path):
    # rsync 3.2.7+ drops --files-from lines beginning with '#' or ';', even with --from0
    image, root = tmp_path / "image", tmp_path / "root"
    for rel in COMMENT_LIKE:
        (image / rel).parent.mkdir(parents=True, exist_ok=True)
        (image / rel).write_text("from the image: %s\n" % rel)
    root.mkdir()
    list_file = str(tmp_path / "list")
    sync.write_list(list_file, ["#dir"] + list(COMMENT_LIKE))
    subprocess.run(sync.rsync_argv(shutil.which("rsync"), list_file, [], str(image), str(root)),
                   check=True)
    for rel in COMMENT_LIKE:
        assert (root / rel).read_text() == "from the image: %s\n" % rel


def test_an_image_with_top_level_names_like_comments_updates_the_node(w, node, tmp_path):
    tree = w.tree("img-hash", image_id="img-hash", release=world.RELEASE, variant="B")
    if not os.path.exists(os.path.join(tree, "#notes")):
        for rel in COMMENT_LIKE:
            os.makedirs(os.path.dirname(os.path.join(tree, rel)), exist_ok=True)
            with open(os.path.join(tree, rel), "w") as f:
                f.write("from the image\n")
        sandbox._clamp(tree)
    image = w.ext4(tree, "hash")
    meta = write_metadata(str(tmp_path / "m.json"), "img-hash", world.offered(tmp_path, image), world.sha256(image))
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 0, r.stderr
    for rel in COMMENT_LIKE:
        assert read(node, rel) == b"from the image\n"
    world.assert_matches_image(node.root, tree)


# what goes wrong after the copy -> (the path named, what differs)
FAULTS = {
    "same-size-content": ('printf "LIBAPP-A-0123456789\\n" > "$R/usr/lib/app/libapp.so"',
                          "/usr/lib/app/libapp.so (content differs)"),
    "mode": ('chmod 0600 "$R/etc/app.conf"', "/etc/app.conf (mode 600, image has 640)"),
    "owner": ('chown 1234:1234 "$R/usr/bin/app"', "/usr/bin/app (owner 1234:1234, image has 0:0)"),
    "skipped-file": ('rm -f "$R/usr/share/app-new/data.txt"', "/usr/share/app-new/data.txt (missing)"),
    "link-target": ('ln -sfn /elsewhere "$R/etc/localtime"', "/etc/localtime (link target"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_copy_that_differs_from_the_image_fails_verify_then_converges(w, node, tmp_path, fault):
    body, named = FAULTS[fault]
    if fault == "link-target":  # B's change set must hold the link: make A's point elsewhere
        subprocess.run(["mount", "-o", "remount,rw", node.root], check=True)
        os.unlink(os.path.join(node.root, "etc/localtime"))
        os.symlink("/usr/share/zoneinfo/Other", os.path.join(node.root, "etc/localtime"))
        subprocess.run(["mount", "-o", "remount,ro", node.root], check=True)
    env = world.wrapped_tool(tmp_path, "rsync", after=body)
    assert_verify_fails_then_converges(w, node, tmp_path, env, named)


def test_a_deleted_path_that_comes_back_fails_verify(w, node, tmp_path):
    # the flush after the deletions re-creates what the image deletes
    env = world.wrapped_tool(tmp_path, "sync", after='mkdir -p "$R/usr/share/app-old"')
    assert_verify_fails_then_converges(w, node, tmp_path, env,
                                       "/usr/share/app-old (still present, the image deletes it)")


def assert_verify_fails_then_converges(w, node, tmp_path, env, named):
    meta = w.metadata_for_b(str(tmp_path))
    preserved = {rel: read(node, rel) for rel in world.PRESERVED_FILES}
    r = agent(node.root, "apply", metadata=meta, env=env)
    assert r.returncode == 1 and "step verify failed" in r.stderr and named in r.stderr, r.stderr
    assert "do not match image after the sync" in r.stderr
    assert read(node, "etc/image_id") == b"img-A\n", "not committed"
    assert "ro" in world.root_mount_options(node.root)
    assert hooks_run(node)[-1] == "error"
    assert {rel: read(node, rel) for rel in world.PRESERVED_FILES} == preserved
    status = agent(node.root, "status")
    assert "content:  mixed: holds part of image img-B over img-A; step verify failed: " \
           in status.stdout, status.stdout
    st = json.loads(agent(node.root, "status", "--json").stdout)
    assert st["history"][-1]["step"] == "verify" and st["history"][-1]["root"].startswith("mixed")
    # the fault is gone: the next run resumes, syncs what differs and verifies again
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 0, r.stderr
    world.assert_matches_image(node.root, w.tree_b)
    st = json.loads(agent(node.root, "status", "--json").stdout)
    assert st["current_image_id"] == "img-B" and "verify" in st["history"][-1]["step_s"]


def test_a_file_that_vanishes_from_the_image_during_the_sync_fails_it_then_converges(w, node,
                                                                                    tmp_path):
    # a directory image loses a file between the plan and the copy: rsync's exit 23 (a listed
    # file it cannot stat; 24 when it goes while rsync reads it), never a silent success
    tree = str(tmp_path / "dir-image")
    shutil.copytree(w.tree_b, tree, symlinks=True)
    conf = tmp_path / "dir.conf"
    conf.write_text("[agent]\nrequire_digest = false\ndirectory_images = %s\n" % tmp_path)
    meta = write_metadata(str(tmp_path / "m.json"), "img-B", "file://" + tree)  # a directory image: directory_images
    gone = os.path.join(tree, "usr/share/app-new/data.txt")
    shutil.copy2(gone, str(tmp_path / "kept"))
    env = world.wrapped_tool(tmp_path, "rsync", before='rm -f "%s"' % gone)
    r = agent(node.root, "apply", metadata=meta, config=str(conf), env=env)
    assert r.returncode == 1 and "step sync failed" in r.stderr and "exit 23" in r.stderr, r.stderr
    assert "usr/share/app-new/data.txt\" failed: No such file" in r.stderr, r.stderr
    assert read(node, "etc/image_id") == b"img-A\n"
    assert "ro" in world.root_mount_options(node.root)
    status = agent(node.root, "status").stdout
    assert "content:  mixed: holds part of image img-B over img-A; step sync failed" in status
    # the image is whole again: the next run converges on it
    shutil.copy2(str(tmp_path / "kept"), gone)
    r = agent(node.root, "apply", metadata=meta, config=str(conf))
    assert r.returncode == 0, r.stderr
    world.assert_matches_image(node.root, tree)


def test_the_reboot_path_verifies_before_its_commit_too(w, node, tmp_path):
    # another kernel: a reboot, whose sync is checked like an in-place one
    tree = w.tree("img-R", image_id="img-R", release="9.9.9-test", variant="B")
    image = w.ext4(tree, "R")
    meta = write_metadata(str(tmp_path / "r.json"), "img-R", world.offered(tmp_path, image), world.sha256(image))
    assert world.plan_json(node.root, meta)["action"] == "reboot"
    env = world.wrapped_tool(tmp_path, "rsync", after='chown 1234:1234 "$R/usr/bin/app"')
    r = agent(node.root, "apply", metadata=meta, env=env)
    assert r.returncode == 1 and "step verify failed" in r.stderr, r.stderr
    assert "/usr/bin/app (owner 1234:1234, image has 0:0)" in r.stderr
    assert read(node, "etc/image_id") == b"img-A\n", "not committed"
    assert "ro" in world.root_mount_options(node.root)
    status = agent(node.root, "status").stdout
    assert "content:  mixed: holds part of image img-R over img-A; step verify failed" in status
    # the next run syncs again (its sync was done, its verification not) and goes on
    r = agent(node.root, "apply", "--json", metadata=meta)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["result"] == "rebooting"
    assert read(node, "etc/image_id") == b"img-R\n"
    assert os.stat(os.path.join(node.root, "usr/bin/app")).st_uid == 0
