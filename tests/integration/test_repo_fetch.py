"""A node updated from an object repository served by a real nginx on 127.0.0.1:
content-exact, fetching only the contents it lacks, and refusing anything that is
not what its name or signature says, with nothing on the node changed."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import nginx_local
import world
from world import agent, plan_json
from update_agent.decide import repo_format as fmt
from update_agent.images import signature
from update_agent.node import manifest
from update_agent.repo import publish as publish_mod
from update_agent.system import System

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]

CONTENT = ("/objects/", "/packs/")
BIG_FILES = 24


def _write(path, data, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    w = world.World(str(tmp_path_factory.mktemp("repo")))
    # C: B with a big file changed, a new file, and B's app moved elsewhere
    c = w.tree("img-C", image_id="img-C", release=world.RELEASE, variant="B")
    _write(os.path.join(c, "usr/lib/big.bin"), os.urandom(fmt.SMALL + 200_000))
    _write(os.path.join(c, "usr/share/new.txt"), b"new in C\n" * 50)
    os.makedirs(os.path.join(c, "opt/moved"))
    os.rename(os.path.join(c, "usr/bin/app"), os.path.join(c, "opt/moved/app"))
    # every kind of path a staging tree must give its image metadata
    _write(os.path.join(c, "usr/lib/pair-1"), b"linked\n" * 10)
    os.link(os.path.join(c, "usr/lib/pair-1"), os.path.join(c, "usr/lib/pair-2"))
    _write(os.path.join(c, "usr/bin/suid"), b"#!/bin/sh\n", 0o4755)
    os.setxattr(os.path.join(c, "usr/bin/suid"), "user.origin", b"built\x00here")
    _write(os.path.join(c, "srv/app/owned"), b"app's\n", 0o600)
    os.chown(os.path.join(c, "srv/app/owned"), 100, 100)
    os.chown(os.path.join(c, "srv/app"), 100, 100)
    os.symlink("../lib/big.bin", os.path.join(c, "usr/bin/big"))
    os.mkfifo(os.path.join(c, "srv/app/fifo"), 0o620)
    for rel in ("usr/lib/big.bin", "usr/bin/suid", "srv/app/owned", "srv/app", "opt/moved", "opt"):
        os.utime(os.path.join(c, rel), ns=(1_600_000_000 * 10**9,) * 2)
    w.tree_c = c
    # D: B with many big new files, for a fetch that takes a while
    d = w.tree("img-D", image_id="img-D", release=world.RELEASE, variant="B")
    for i in range(BIG_FILES):
        _write(os.path.join(d, "usr/lib/d/%02d.bin" % i), os.urandom(fmt.SMALL + 50_000))
    w.tree_d = d
    # F: B with 10 MB new, more than a small state dir can stage
    f = w.tree("img-F", image_id="img-F", release=world.RELEASE, variant="B")
    for i in range(2):
        _write(os.path.join(f, "usr/lib/f/%d.bin" % i), os.urandom(5_000_000))
    w.repo = os.path.join(w.base, "www", "repo")
    for tree, image_id in ((w.tree_a, "img-A"), (w.tree_b, "img-B"), (c, "img-C"), (d, "img-D"),
                           (f, "img-F")):
        publish_mod.publish(tree, w.repo, image_id, System())
    return w


@pytest.fixture(scope="module")
def origin(w, tmp_path_factory):
    with nginx_local.origin(os.path.join(w.base, "www"),
                            str(tmp_path_factory.mktemp("nginx"))) as o:
        yield o


def record(w, image_id):
    with open(os.path.join(w.repo, fmt.record_path(image_id))) as f:
        return json.load(f)


def meta(tmp, origin, w, image_id, digest=True, **extra):
    opts = {"repo": origin.url + "/repo/"}
    if digest:
        opts["image_digest"] = record(w, image_id)["manifest"]
    opts.update(extra)
    return _meta_file(tmp, image_id, opts)


def _meta_file(tmp, image_id, opts):
    path = os.path.join(str(tmp), image_id + ".json")
    with open(path, "w") as f:
        json.dump({"image_id": image_id, "update_agent": opts}, f)
    return path


def assert_exact(root, tree):
    """The node holds the image exactly: content, type, mode, owner, xattrs, hard-link
    groups, link targets and mtimes, as the manifest records them."""
    skip = manifest.Excluder(world.NOT_FROM_IMAGE)
    node, _ = manifest.build(root, skip, skip_devices=False)
    image, _ = manifest.build(tree, skip, skip_devices=False)
    assert sorted(set(node) ^ set(image)) == []
    assert sorted(rel for rel in image if node[rel] != image[rel]) == []


def new_contents(old_tree, new_tree):
    """The contents of new_tree's files that old_tree has nowhere."""
    skip = manifest.Excluder(world.NOT_FROM_IMAGE)
    old, _ = manifest.build(old_tree, skip)
    new, _ = manifest.build(new_tree, skip)
    have = {e.digest for e in old.values() if e.kind == "f"}
    return {e.digest for e in new.values() if e.kind == "f" and e.size and e.digest not in have}


def content_served(origin, since=0):
    """(bytes, requests) of the content files the origin served after `since` requests."""
    got = [s for s in origin.served()[since:] if s.path.startswith("/repo" + CONTENT[0])
           or s.path.startswith("/repo" + CONTENT[1])]
    return sum(s.body_bytes for s in got), len(got)


def test_a_repository_updates_a_node_content_exactly_and_fetches_only_what_it_lacks(
        w, origin, node, tmp_path):
    m = meta(tmp_path, origin, w, "img-B")
    before = len(origin.served())
    plan = plan_json(node.root, m)
    assert plan["action"] == "in-place", plan["reasons"]
    predicted = plan["fetch"]
    # a dry run fetches the account files alone (one small range): the plan merges them
    got, requests = content_served(origin, before)
    assert requests <= 1 and got < 4096
    assert predicted["requests"] > 0 and predicted["bytes"] > 0
    mark = len(origin.served())
    r = agent(node.root, "apply", metadata=m)
    assert r.returncode == 0, r.stderr
    world.assert_matches_image(node.root, w.tree_b)
    assert content_served(origin, mark) == (predicted["bytes"], predicted["requests"])
    # a node on the image published before needs B's delta index, not the whole index
    indexes = {s.path for s in origin.served() if "/indexes/" in s.path}
    rec = record(w, "img-B")
    assert "/repo/" + fmt.index_path(fmt.hex_of(rec["delta_index"])) in indexes
    assert "/repo/" + fmt.index_path(fmt.hex_of(rec["index"])) not in indexes

    # to C: only C's new contents come over; the moved app's bytes are copied locally
    m = meta(tmp_path, origin, w, "img-C")
    plan = plan_json(node.root, m)
    assert plan["fetch"]["contents"] == len(new_contents(w.tree_b, w.tree_c))
    assert plan["fetch"]["local"] == 1  # opt/moved/app: B's usr/bin/app
    mark = len(origin.served())
    r = agent(node.root, "apply", metadata=m)
    assert r.returncode == 0, r.stderr
    world.assert_matches_image(node.root, w.tree_c)
    assert_exact(node.root, w.tree_c)
    got, requests = content_served(origin, mark)
    assert (got, requests) == (plan["fetch"]["bytes"], plan["fetch"]["requests"])


def test_a_node_two_images_behind_falls_back_to_the_full_index(w, origin, node, tmp_path):
    # C's delta locates what B lacks; a node on A also lacks what B brought and C kept
    rec = record(w, "img-C")
    r = agent(node.root, "-v", "apply", metadata=meta(tmp_path, origin, w, "img-C"))
    assert r.returncode == 0, r.stderr
    assert "fetching the full index" in r.stderr
    assert_exact(node.root, w.tree_c)
    indexes = {s.path for s in origin.served() if "/indexes/" in s.path}
    assert "/repo/" + fmt.index_path(fmt.hex_of(rec["index"])) in indexes


def test_the_record_alone_names_the_manifest_only_where_the_config_allows_it(
        w, origin, node, tmp_path):
    m = meta(tmp_path, origin, w, "img-B", digest=False)
    r = agent(node.root, "apply", metadata=m)
    assert r.returncode != 0 and "require_digest" in r.stderr, r.stderr
    config = tmp_path / "agent.conf"
    config.write_text("[agent]\nrequire_digest = false\n")
    r = agent(node.root, "apply", metadata=m, config=str(config))
    assert r.returncode == 0, r.stderr
    world.assert_matches_image(node.root, w.tree_b)


def _tampered_copy(w, tmp_path, change):
    """A copy of the repository (served from the same origin) with one change."""
    name = "bad-%s" % os.path.basename(str(tmp_path))
    copy = os.path.join(w.base, "www", name)
    shutil.copytree(w.repo, copy)
    change(copy)
    return name


def _file_of(tree, rel):
    import hashlib
    with open(os.path.join(tree, rel), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _refused_unchanged(node, m, expect, config=None):
    before = world.snapshot(node.root)
    r = agent(node.root, "apply", metadata=m, config=config)
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr and "unexpected" not in r.stderr, r.stderr
    assert expect in r.stderr, r.stderr
    assert world.snapshot(node.root) == before


def test_an_object_whose_bytes_do_not_match_its_name_is_refused_and_nothing_changes(
        w, origin, node, tmp_path):
    def swap_big_object(repo):
        # a well-formed zstd object, of other bytes than its name says
        obj = os.path.join(repo, fmt.object_path(_file_of(w.tree_c, "usr/lib/big.bin")))
        other = os.path.join(str(tmp_path), "other")
        _write(other, os.urandom(fmt.SMALL + 200_000))
        System().run(["zstd", "-q", "-f", "-o", obj, other])
    name = _tampered_copy(w, tmp_path, swap_big_object)
    m = _meta_file(tmp_path, "img-C", {"repo": origin.url + "/" + name + "/",
                                       "image_digest": record(w, "img-C")["manifest"]})
    _refused_unchanged(node, m, "does not hold what its name says")


def test_a_manifest_that_is_not_its_digest_is_refused(w, origin, node, tmp_path):
    def swap_manifest(repo):
        b = fmt.manifest_path(fmt.hex_of(record(w, "img-B")["manifest"]))
        c = fmt.manifest_path(fmt.hex_of(record(w, "img-C")["manifest"]))
        shutil.copyfile(os.path.join(repo, c), os.path.join(repo, b))
    name = _tampered_copy(w, tmp_path, swap_manifest)
    m = _meta_file(tmp_path, "img-B", {"repo": origin.url + "/" + name + "/",
                                       "image_digest": record(w, "img-B")["manifest"]})
    _refused_unchanged(node, m, "does not hold what its name says")


def test_an_unsigned_or_wrongly_signed_record_is_refused_when_the_node_trusts_a_key(
        w, origin, node, tmp_path):
    key = os.path.join(str(tmp_path), "key.pem")
    System().run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", key])
    pub = System().run(["openssl", "pkey", "-in", key, "-pubout"]).stdout
    with world.writable(node.root):
        _write(os.path.join(node.root, "etc/update-agent/keys/test.pub"), pub.encode())
    config = tmp_path / "agent.conf"  # the record names the manifest: its signature decides
    config.write_text("[agent]\nrequire_digest = false\n")
    _refused_unchanged(node, meta(tmp_path, origin, w, "img-B", digest=False), "not signed",
                       str(config))

    def sign_then_swap(repo):
        path = os.path.join(repo, fmt.record_path("img-B"))
        with open(path) as f:
            rec = json.load(f)
        rec["signature"] = signature.sign(rec["manifest"], signature.load_private_key(key))
        rec["manifest"] = record(w, "img-C")["manifest"]  # not the manifest signed
        with open(path, "w") as f:
            json.dump(rec, f)
    name = _tampered_copy(w, tmp_path, sign_then_swap)
    m = _meta_file(tmp_path, "img-B", {"repo": origin.url + "/" + name + "/"})
    _refused_unchanged(node, m, "signature", str(config))


def test_a_rollback_needs_no_download_the_origin_is_stopped(w, tmp_path_factory, node, tmp_path):
    www = os.path.join(w.base, "www")
    with nginx_local.origin(www, str(tmp_path_factory.mktemp("nginx-once"))) as once:
        for image_id in ("img-B", "img-C"):
            r = agent(node.root, "apply", metadata=meta(tmp_path, once, w, image_id))
            assert r.returncode == 0, r.stderr
        kept = os.path.join(node.root, ".update-agent-kept")
        assert os.listdir(kept) == ["sha256-" + fmt.hex_of(record(w, "img-C")["manifest"])]
    # the origin is gone: B comes back from the node's own files
    r = agent(node.root, "rollback")
    assert r.returncode == 0, r.stderr
    assert_exact(node.root, w.tree_b)


def test_a_fetch_killed_half_way_resumes_without_fetching_again_what_it_had(
        w, tmp_path_factory, node, tmp_path):
    www = os.path.join(w.base, "www")
    cache = os.path.join(node.root, "var/lib/update-agent/images/objects")
    big = {_file_of(w.tree_d, "usr/lib/d/%02d.bin" % i) for i in range(BIG_FILES)}
    with nginx_local.origin(www, str(tmp_path_factory.mktemp("slow")), limit_rate=8 * 300_000) as slow:
        m = meta(tmp_path, slow, w, "img-D")
        env = dict(os.environ, PYTHONPATH=os.path.join(world.PROJECT, "agent"))
        proc = subprocess.Popen([sys.executable, "-m", "update_agent", "--root", node.root,
                                 "--metadata", m, "apply"], env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        kept = []
        while time.monotonic() < deadline and proc.poll() is None and len(kept) < BIG_FILES // 3:
            kept = set(os.listdir(cache)) & big if os.path.isdir(cache) else set()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, proc.stderr.read()
        kept = set(os.listdir(cache)) & big
        partial = {n.split(".")[0]: os.path.getsize(os.path.join(cache, n))
                   for n in os.listdir(cache) if n.endswith(".zst.part")}
        assert BIG_FILES // 3 <= len(kept) < BIG_FILES, "not killed half-way"
        first = len(slow.served())
        r = agent(node.root, "apply", metadata=m)
        assert r.returncode == 0, r.stderr
        again = slow.served()[first:]
    asked = {os.path.basename(s.path).split(".")[0]: s.range for s in again if "/objects/" in s.path}
    assert not kept & set(asked), "fetched again: %s" % sorted(kept & set(asked))[:3]
    for hexdigest, size in partial.items():  # a partial object goes on from where it stopped
        wanted = asked.get(hexdigest, "")
        assert wanted.startswith("bytes=%d-" % size) if size else wanted == "", (hexdigest, wanted)
    assert_exact(node.root, w.tree_d)


def test_a_state_dir_too_small_for_the_changed_files_is_refused_before_a_byte_comes(
        w, origin, tmp_path):
    n = w.node(str(tmp_path), state_mb=16)
    try:
        config = tmp_path / "agent.conf"
        config.write_text("[agent]\nstage_space_margin = 1M\n")
        mark = len(origin.served())
        _refused_unchanged(n, meta(tmp_path, origin, w, "img-F"), "not enough room to stage the image",
                           str(config))
        assert content_served(origin, mark) == (0, 0)
        objects = os.path.join(n.root, "var/lib/update-agent/images/objects")
        assert not os.path.isdir(objects) or not os.listdir(objects)
    finally:
        n.stop()
