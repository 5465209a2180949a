"""`update-agent publish` into a real repository directory, read back as a client would
(docs/repository.md): every file of the image comes back byte for byte from its object
or its pack member; a second image writes only what is new; a directory publishes
without root; a prune removes only what long-retired images alone used."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from update_agent.cli import main as cli
from update_agent.decide import entries as entries_mod, repo_format as fmt
from update_agent.errors import BadInput
from update_agent.node import manifest
from update_agent.repo import prune as prune_mod, publish as publish_mod, store as store_mod
from update_agent.system import System

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files as others and "
                                 "to drop to an unprivileged user")]


def _write(path, data, mode=0o644, uid=0, gid=0, mtime_s=1_700_000_000):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chown(path, uid, gid)
    os.chmod(path, mode)  # after chown, which clears set-user-id
    os.utime(path, ns=(mtime_s * 10**9, mtime_s * 10**9))


def make_tree(top, variant=b"A"):
    """A small image: packed files, big ones, a hard link, a symlink, an xattr, owners."""
    _write(os.path.join(top, "etc/image_id"), b"img-" + variant.lower() + b"\n")
    _write(os.path.join(top, "etc/passwd"), b"root:x:0:0:root:/root:/bin/sh\n")
    for i in range(300):
        _write(os.path.join(top, "usr/share/doc/f%03d" % i), b"doc %d\n" % i * (i + 1))
    _write(os.path.join(top, "usr/lib/big.so"), os.urandom(fmt.SMALL + 300_000), 0o755)
    _write(os.path.join(top, "usr/bin/tool"), b"tool " + variant + b"\n" * (fmt.SMALL + 70_000), 0o4755, 0, 0)
    _write(os.path.join(top, "home/user/notes"), b"mine", 0o600, 1234, 1235)
    os.link(os.path.join(top, "usr/share/doc/f001"), os.path.join(top, "usr/share/doc/hard"))
    os.symlink("../lib/big.so", os.path.join(top, "usr/bin/big"))
    os.utime(os.path.join(top, "usr/bin/big"), ns=(1_700_000_000 * 10**9,) * 2, follow_symlinks=False)
    _write(os.path.join(top, "empty"), b"")
    os.setxattr(os.path.join(top, "usr/bin/tool"), "user.origin", b"built\x00here")
    for d in ("", "etc", "usr", "usr/share", "usr/share/doc", "usr/lib", "usr/bin", "home",
              "home/user"):
        os.chmod(os.path.join(top, d), 0o755)
        os.utime(os.path.join(top, d), ns=(1_700_000_000 * 10**9,) * 2)
    return top


@pytest.fixture
def place():
    """A directory every user can reach (pytest's tmp_path is root's alone)."""
    path = tempfile.mkdtemp(prefix="publish-test-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def read_back(repo, image_id):
    """What a client gets: (entries, {hex: bytes}, xattr values), each verified."""
    with open(os.path.join(repo, fmt.record_path(image_id))) as f:
        rec = fmt.record_loads(f.read(), image_id)
    text = _unzstd(_read(repo, fmt.manifest_path(fmt.hex_of(rec["manifest"]))))
    assert "sha256:" + hashlib.sha256(text).hexdigest() == rec["manifest"]
    entries, _ = entries_mod.loads(text.decode("utf-8", "surrogateescape"))
    index = fmt.index_loads(_unzstd(_read(repo, fmt.index_path(fmt.hex_of(rec["index"])))).decode())
    contents = {}
    for hexdigest, (path, offset, length) in index.items():
        with open(os.path.join(repo, path), "rb") as f:
            f.seek(offset)
            data = _unzstd(f.read(length))  # one range, one zstd frame
        assert hashlib.sha256(data).hexdigest() == hexdigest
        contents[hexdigest] = data
    xattrs = fmt.xattrs_loads(_unzstd(_read(repo, fmt.xattrs_path(fmt.hex_of(rec["xattrs"])))).decode()) \
        if rec["xattrs"] else {}
    return entries, contents, xattrs


def _read(repo, rel):
    with open(os.path.join(repo, rel), "rb") as f:
        return f.read()


def _unzstd(data):
    return subprocess.run(["zstd", "-d", "-q", "-c"], input=data, capture_output=True, check=True).stdout


def repo_files(repo):
    """{path: (inode, mtime_ns)} of everything published (not the lock or temporaries)."""
    found = {}
    for top, dirs, files in os.walk(repo):
        dirs[:] = [d for d in dirs if d != fmt.TMP_DIR]
        for name in files:
            path = os.path.join(top, name)
            st = os.stat(path)
            found[os.path.relpath(path, repo)] = (st.st_ino, st.st_mtime_ns)
    found.pop(fmt.LOCK_FILE, None)
    return found


def test_a_directory_image_reads_back_content_exact(place, capsys):
    tree = make_tree(os.path.join(place, "a"))
    repo = os.path.join(place, "repo")
    assert cli.main(["publish", tree, repo]) == 0
    assert "published img-a" in capsys.readouterr().out
    entries, contents, xattrs = read_back(repo, "img-a")
    assert entries == manifest.build(tree, entries_mod.Excluder(()))[0]
    for rel, e in entries.items():
        if e.kind == "f" and e.size:
            with open(os.path.join(tree, rel), "rb") as f:
                assert contents[e.digest] == f.read(), rel
    assert entries["usr/bin/big"].digest == "../lib/big.so"
    assert entries["usr/share/doc/hard"].link == entries["usr/share/doc/f001"].link == "usr/share/doc/f001"
    assert (entries["home/user/notes"].uid, entries["home/user/notes"].gid) == (1234, 1235)
    assert entries["usr/bin/tool"].mode == 0o4755
    assert xattrs == {"usr/bin/tool": {"user.origin": b"built\x00here"}}
    assert manifest.xattrs_hash(xattrs["usr/bin/tool"]) == entries["usr/bin/tool"].xattrs
    # contents that compress below 1 MiB share packs (about one request per MiB), tool's
    # 1 MiB of newlines included; only big.so, incompressible, is an object of its own
    index = fmt.index_loads(_unzstd(_read(repo, fmt.index_path(fmt.hex_of(
        fmt.record_loads(open(os.path.join(repo, fmt.record_path("img-a"))).read(), "a")["index"])))).decode())
    assert entries["usr/bin/tool"].size > fmt.SMALL
    assert index[entries["usr/bin/tool"].digest][0].startswith("packs/")
    assert {p.split("/")[0] for p, _, _ in index.values()} == {"packs", "objects"}
    assert [p for p, _, _ in index.values() if p.startswith("objects/")] == \
        [fmt.object_path(entries["usr/lib/big.so"].digest)]
    assert len({p for p, _, _ in index.values() if p.startswith("packs/")}) == 1


def test_publishing_again_rewrites_nothing_and_a_changed_image_adds_only_its_new_files(place):
    tree_a = make_tree(os.path.join(place, "a"))
    repo = os.path.join(place, "repo")
    publish_mod.publish(tree_a, repo, "img-a", System())
    before = repo_files(repo)
    again = publish_mod.publish(tree_a, repo, "img-a", System())
    assert again.already and repo_files(repo) == before
    # B: one small file and one big file changed, the rest the same; the big one
    # compresses to a few hundred bytes, so it shares the small one's pack
    tree_b = os.path.join(place, "b")
    shutil.copytree(tree_a, tree_b, symlinks=True)
    _write(os.path.join(tree_b, "usr/share/doc/f007"), b"changed in B\n")
    _write(os.path.join(tree_b, "usr/bin/tool"), b"tool B\n" * (fmt.SMALL // 5), 0o4755)
    done = publish_mod.publish(tree_b, repo, "img-b", System())
    after = repo_files(repo)
    assert {p: after[p] for p in before} == before  # not one file rewritten or touched
    added = sorted(set(after) - set(before))
    kinds = sorted(p.split("/")[0] for p in added)
    # one pack (f007 and tool), its index and its delta index from A, its manifest and
    # its record; B's xattr values are A's, already there
    assert kinds == ["images", "indexes", "indexes", "manifests", "packs"], added
    rec_b = fmt.record_loads(open(os.path.join(repo, fmt.record_path("img-b"))).read(), "b")
    assert rec_b["delta_from"] == "img-a"
    delta = fmt.index_loads(store_mod.read_compressed_text(System(), os.path.join(
        repo, fmt.index_path(fmt.hex_of(rec_b["delta_index"])))))
    # B's two new contents, and of what A already had only its account file: every
    # node fetches the image's for the merge with its own
    entries_b, contents_b, _ = read_back(repo, "img-b")
    assert set(delta) == {entries_b[r].digest for r in ("usr/share/doc/f007", "usr/bin/tool",
                                                         "etc/passwd")}
    assert (done.new_objects, done.new_packs) == (0, 1)
    sizes = {p: os.path.getsize(os.path.join(repo, p)) for p in added}
    assert done.written_bytes == sum(s for p, s in sizes.items() if not p.startswith("images/"))
    # A's contents took over 300 kB; B's two new ones compress to a few hundred bytes
    assert sum(s for p, s in sizes.items() if p.startswith(("objects/", "packs/"))) < 1000
    assert contents_b[entries_b["usr/share/doc/f007"].digest] == b"changed in B\n"


def test_a_tarball_of_the_same_tree_publishes_the_same_manifest_and_writes_no_object(place):
    tree = make_tree(os.path.join(place, "a"))
    repo = os.path.join(place, "repo")
    publish_mod.publish(tree, repo, "img-a", System())
    tarball = os.path.join(place, "a.tar")
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--format=pax", "-C", tree, "-cf",
                    tarball, "."], check=True)
    assert cli.main(["publish", tarball, repo, "--image-id", "img-a-tar", "--json"]) == 0
    with open(os.path.join(repo, fmt.record_path("img-a"))) as f, \
            open(os.path.join(repo, fmt.record_path("img-a-tar"))) as g:
        assert json.load(f)["manifest"] == json.load(g)["manifest"]
    assert len([p for p in repo_files(repo) if p.startswith(("packs/", "objects/"))]) == 2


def _as_nobody(argv):
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-m", "update_agent"] + argv, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=os.path.join(PROJECT, "agent")), timeout=60)


def test_an_unprivileged_user_publishes_a_directory(place):
    tree = os.path.join(place, "a")
    os.makedirs(tree)
    for i in range(50):
        with open(os.path.join(tree, "f%d" % i), "w") as f:
            f.write("file %d\n" % i)
    os.chown(tree, 65534, 65534)
    repo = os.path.join(place, "repo")
    os.makedirs(repo)
    os.chown(repo, 65534, 65534)
    r = _as_nobody(["publish", tree, repo, "--image-id", "by-nobody"])
    assert r.returncode == 0, r.stderr
    assert os.stat(os.path.join(repo, fmt.record_path("by-nobody"))).st_uid == 65534
    entries, contents, _ = read_back(repo, "by-nobody")
    assert sorted(contents.values()) == sorted(b"file %d\n" % i for i in range(50))


@pytest.mark.parametrize("compress", ["", "--zstd"])
def test_an_unprivileged_user_publishes_a_tarball_with_its_owners_and_xattrs(place, compress):
    # nothing is unpacked: the manifest comes from the headers, and is the one root's
    # unpacking gives (owners, set-user-id, xattrs, hard links, nanosecond mtimes)
    tree = make_tree(os.path.join(place, "a"))
    repo = os.path.join(place, "repo")
    publish_mod.publish(tree, repo, "img-a", System())
    tarball = os.path.join(place, "a.tar")
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--format=pax", "-C", tree, "-cf",
                    tarball] + ([compress] if compress else []) + ["."], check=True)
    os.chmod(tarball, 0o644)
    for sub in ("", "images", "indexes", "manifests", "xattrs", "objects", "packs", "tmp", "lock"):
        for top, dirs, files in os.walk(os.path.join(repo, sub)) if sub != "lock" else ():
            for name in dirs + files:
                os.chown(os.path.join(top, name), 65534, 65534)
        os.chown(os.path.join(repo, sub), 65534, 65534)
    # the id from the archive's /etc/image_id; the same manifest: nothing to do
    r = _as_nobody(["publish", tarball, repo])
    assert r.returncode == 0 and "image img-a is already in" in r.stdout, r.stderr
    r = _as_nobody(["publish", tarball, repo, "--image-id", "img-a-tar", "--json"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["new_objects"] == json.loads(r.stdout)["new_packs"] == 0
    with open(os.path.join(repo, fmt.record_path("img-a"))) as f, \
            open(os.path.join(repo, fmt.record_path("img-a-tar"))) as g:
        assert json.load(f)["manifest"] == json.load(g)["manifest"]


def test_an_unprivileged_publish_of_an_image_to_mount_is_refused_in_one_line(place):
    image = os.path.join(place, "a.ext4")
    with open(image, "wb") as f:
        f.write(b"\0" * 1080 + b"\x53\xef" + b"\0" * 3014)  # an ext4 superblock's magic
    os.chmod(image, 0o644)
    r = _as_nobody(["publish", image, os.path.join(place, "repo"), "--image-id", "x"])
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "a ext4 image is opened only as root" in r.stderr


def test_prune_removes_a_retired_images_files_only_after_the_grace_period(place):
    repo = os.path.join(place, "repo")
    start = time.time()
    clock = [start]
    system = System(clock=lambda: clock[0])
    tree_a = make_tree(os.path.join(place, "a"), b"A")
    publish_mod.publish(tree_a, repo, "img-a", system)
    only_a = set(repo_files(repo))
    tree_b = make_tree(os.path.join(place, "b"), b"B")  # new big.so and tool, same docs
    clock[0] += 10
    publish_mod.publish(tree_b, repo, "img-b", system)
    only_a -= {p for p in repo_files(repo) if _named_by(repo, "img-b", p)}

    clock[0] += 1000
    first = prune_mod.prune(repo, 1, 3600, system)
    assert first.retired == ["img-a"] and first.deleted == 0
    assert not os.path.exists(os.path.join(repo, fmt.record_path("img-a")))
    assert os.path.exists(os.path.join(repo, fmt.retired_path("img-a")))
    assert only_a <= set(repo_files(repo)) | {fmt.record_path("img-a")}
    with pytest.raises(BadInput, match="'img-a' was published .* and retired"):
        publish_mod.publish(tree_b, repo, "img-a", system)  # its id still means A's content

    clock[0] += 3599  # a node may still be fetching A
    assert prune_mod.prune(repo, 1, 3600, system).deleted == 0
    clock[0] += 1
    last = prune_mod.prune(repo, 1, 3600, system)
    assert last.expired == ["img-a"] and last.deleted > 0
    left = set(repo_files(repo))
    assert not (only_a - {fmt.record_path("img-a")}) & left
    read_back(repo, "img-b")  # everything B names is still there


def _named_by(repo, image_id, path):
    with open(os.path.join(repo, fmt.record_path(image_id))) as f:
        rec = json.load(f)
    if path in fmt.metadata_paths(rec) or path in (fmt.record_path(image_id), fmt.FORMAT_FILE):
        return True
    index = fmt.index_loads(_unzstd(_read(repo, fmt.index_path(fmt.hex_of(rec["index"])))).decode())
    return path in {loc[0] for loc in index.values()}


def test_build_dib_images_publish_step_publishes_a_built_image(place):
    # the command tools/build-dib-image --publish runs once its image is built
    import importlib.machinery
    import importlib.util
    tool = os.path.join(PROJECT, "tools", "build-dib-image")
    loader = importlib.machinery.SourceFileLoader("build_dib_image", tool)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    tree = make_tree(os.path.join(place, "a"))
    repo = os.path.join(place, "repo")
    r = subprocess.run(module.publish_argv(tree, repo, "img-dib"), capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=os.path.join(PROJECT, "agent")), timeout=60)
    assert r.returncode == 0, r.stderr
    entries, _, _ = read_back(repo, "img-dib")
    assert entries == manifest.build(tree, entries_mod.Excluder(()))[0]


def test_a_key_signs_the_manifest_digest_as_the_nodes_keys_verify_it(place):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from update_agent.errors import AgentError
    from update_agent.images import signature
    key = Ed25519PrivateKey.generate()
    key_file, keys_dir = os.path.join(place, "key.pem"), os.path.join(place, "keys")
    with open(key_file, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.makedirs(keys_dir)
    with open(os.path.join(keys_dir, "publisher.pub"), "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    repo = os.path.join(place, "repo")
    assert cli.main(["publish", make_tree(os.path.join(place, "a")), repo, "--key", key_file]) == 0
    with open(os.path.join(repo, fmt.record_path("img-a"))) as f:
        rec = json.load(f)
    sig = signature.decode(rec["signature"])
    assert signature.verify(rec["manifest"], sig, keys_dir, "img-a") == "publisher.pub"
    other = rec["manifest"][:-1] + ("0" if rec["manifest"][-1] != "0" else "1")
    with pytest.raises(AgentError, match="matches none"):
        signature.verify(other, sig, keys_dir, "img-a")


def test_names_a_file_list_cannot_hold_and_names_not_utf8_publish_too(place):
    tree = os.path.join(place, "a")
    os.makedirs(tree)
    names = {"new\nline": b"one\n", os.fsdecode(b"latin-\xe9"): b"two\n", "-starts-with-dash": b"3",
             "big\nand.zst": b"x" * 100_000}
    for name, data in names.items():
        with open(os.path.join(tree, name), "wb") as f:
            f.write(data)
    repo = os.path.join(place, "repo")
    publish_mod.publish(tree, repo, "odd", System())
    entries, contents, _ = read_back(repo, "odd")
    assert {rel: contents[e.digest] for rel, e in entries.items()} == names
