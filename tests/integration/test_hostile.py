"""The hostile input catalogue: each case gets a clear error and loses nothing;
the root is untouched or fully converged. Together with the cases elsewhere,
docs/hostile-input.md lists them all with their tests."""

import json
import os
import stat
import subprocess

import pytest

import sandbox
import world
from world import agent, write_metadata

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    return world.World(str(tmp_path_factory.mktemp("hostile")))


def untouched(node, run):
    before = world.snapshot(node.root)
    r = run()
    assert world.snapshot(node.root) == before, "the root changed"
    assert "Traceback" not in r.stderr
    return r


METADATA = [
    ("huge image_id", {"image_id": "a" * 100000}, ["'image_id'", "chars"]),
    ("image_id with a newline", {"image_id": "img-1\nreboot"}, ["'image_id'"]),
    ("image_id with a slash", {"image_id": "../../etc/passwd"}, ["'image_id'"]),
    ("image_id with $()", {"image_id": "$(reboot)"}, ["'image_id'", "$(reboot)"]),
    ("image_id with a backtick", {"image_id": "img`id`"}, ["'image_id'"]),
    ("image_id is a list", {"image_id": ["a"]}, ["'image_id'", "list"]),
    ("image_id is null", {"image_id": None}, ["'image_id'", "missing"]),
    ("metadata is a list", ["image_id"], ["JSON object"]),
    ("update_agent is a list", {"image_id": "i", "update_agent": []}, ["'update_agent'"]),
    ("digest is a number", {"image_id": "i", "update_agent": {"image_url": "file:///x", "image_digest": 5}},
     ["image_digest"]),
    ("digest of the wrong length", {"image_id": "i", "update_agent": {
        "image_url": "file:///x", "image_digest": "sha256:abcd"}}, ["image_digest", "sha256:abcd"]),
    ("huge URL", {"image_id": "i", "update_agent": {"image_url": "http://x/" + "a" * 10000}},
     ["image_url"]),
    ("URL with a space", {"image_id": "i", "update_agent": {"image_url": "http://x/a b"}}, ["image_url"]),
    ("gopher URL", {"image_id": "i", "update_agent": {"image_url": "gopher://x/1"}}, ["scheme"]),
    ("data URL", {"image_id": "i", "update_agent": {"image_url": "data:,hello"}}, ["scheme"]),
    ("bare path", {"image_id": "i", "update_agent": {"image_url": "/etc/shadow"}}, ["scheme"]),
    ("deployments not a list", {"image_id": "i", "deployments": "x"}, []),
]


@pytest.mark.parametrize("name, metadata, words", METADATA, ids=[m[0] for m in METADATA])
def test_hostile_metadata(node, tmp_path, name, metadata, words):
    meta = tmp_path / "m.json"
    meta.write_text(json.dumps(metadata))
    r = untouched(node, lambda: agent(node.root, "apply", metadata=str(meta)))
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and len(r.stderr) < 600, r.stderr
    for word in words:
        assert word in r.stderr, r.stderr


def test_hostile_deployments_in_the_daemon_are_survived(w, tmp_path):
    n = w.node(str(tmp_path), occ_mount=True,
               occ_cache={"heat_local.json": {"deployments": [{"group": "update-agent", "id": 7}]}})
    try:
        r = agent(n.root, "run", "--once")
        assert r.returncode == 1 and "has no valid 'id'" in r.stderr and "Traceback" not in r.stderr
    finally:
        n.stop()


def _in_offer_dir(node, name, make):
    """A file:// URL inside the node's default file_image_dirs, to what make(path) made:
    the checks past the directory scope."""
    path = os.path.join(node.root, sandbox.OFFER_DIR, name)
    make(path)
    return "file://" + path


URLS = [
    ("file URL to a device", lambda n: _in_offer_dir(n, "zero", lambda p: os.mknod(
        p, 0o600 | stat.S_IFCHR, os.makedev(1, 5))), 2, ["zero", "regular file"]),
    ("file URL to a directory", lambda n: _in_offer_dir(n, "dir", os.mkdir), 2,
     ["directory_images"]),
    ("file URL to a FIFO", lambda n: _in_offer_dir(n, "fifo", os.mkfifo), 2, ["regular file"]),
    ("missing file", lambda n: _in_offer_dir(n, "nonexistent.raw", lambda p: None), 1,
     ["nonexistent"]),
    ("file URL to a host device", lambda n: "file:///dev/zero", 2, ["outside file_image_dirs"]),
    # a directory: refused unread unless under the config's directory_images
    ("file URL to the host's root", lambda n: "file:///", 2, ["directory_images"]),
    ("connection refused", lambda n: "http://127.0.0.1:9/image.raw", 1, ["127.0.0.1:9"]),
]


@pytest.mark.parametrize("name, make, code, words", URLS, ids=[u[0] for u in URLS])
def test_hostile_urls(node, tmp_path, name, make, code, words):
    url = make(node)
    meta = write_metadata(str(tmp_path / "m.json"), "img-x", url, "sha256:" + "0" * 64)
    r = untouched(node, lambda: agent(node.root, "apply", metadata=meta))
    assert r.returncode in (1, 2) and (r.returncode == code or code == 1), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    for word in words:
        assert word in r.stderr


def test_redirect_to_a_file_url_is_refused(node, tmp_path):
    import http.server
    import threading

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", "file:///etc/shadow")
            self.end_headers()

        def log_message(self, *a):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        meta = write_metadata(str(tmp_path / "m.json"), "img-x",
                              "http://127.0.0.1:%d/i" % server.server_address[1], "sha256:" + "0" * 64)
        r = untouched(node, lambda: agent(node.root, "apply", metadata=meta))
        assert r.returncode in (1, 2) and "file" in r.stderr, r.stderr
    finally:
        server.shutdown()


def _image(w, tmp_path, name, make):
    path = str(tmp_path / name)
    make(path)
    return write_metadata(str(tmp_path / "m.json"), "img-x", world.offered(tmp_path, path), world.sha256(path))


IMAGES = [
    ("empty image", lambda p: open(p, "wb").close()),
    ("not a filesystem", lambda p: open(p, "wb").write(os.urandom(1 << 20))),
    ("a text file", lambda p: open(p, "w").write("hello\n" * 1000)),
]


@pytest.mark.parametrize("name, make", IMAGES, ids=[i[0] for i in IMAGES])
def test_hostile_images(w, node, tmp_path, name, make):
    meta = _image(w, tmp_path, name.replace(" ", "-"), make)
    r = untouched(node, lambda: agent(node.root, "apply", metadata=meta))
    assert r.returncode in (1, 2) and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_truncated_and_corrupt_ext4(w, node, tmp_path):
    for name, mangle in (("truncated", lambda d: d[: len(d) // 3]),
                         ("corrupt", lambda d: d[:1024] + os.urandom(4096) + d[5120:])):
        data = open(w.image_b, "rb").read()
        meta = _image(w, tmp_path, name, lambda p: open(p, "wb").write(mangle(data)))
        r = untouched(node, lambda: agent(node.root, "apply", metadata=meta))
        assert r.returncode in (1, 2), (name, r.stderr)


def test_a_tree_with_device_nodes_syncs_them_as_nodes(w, node, tmp_path):
    # device nodes are image content like any other: created as nodes, never opened
    tree = w.tree("img-dev", image_id="img-dev", release=world.RELEASE, variant="B")
    os.mknod(os.path.join(tree, "usr/share/null-copy"), 0o600 | 0o020000, os.makedev(1, 3))
    image = w.ext4(tree, "dev")
    meta = write_metadata(str(tmp_path / "m.json"), "img-dev", world.offered(tmp_path, image), world.sha256(image))
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 0, r.stderr
    st = os.lstat(os.path.join(node.root, "usr/share/null-copy"))
    assert os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3


def test_files_under_a_node_mount_point_stay_out_of_it(w, node, tmp_path):
    tree = w.tree("img-mnt", image_id="img-mnt", release=world.RELEASE, variant="B")
    with open(os.path.join(tree, "mnt/state/intruder"), "w") as f:
        f.write("from the image\n")
    image = w.ext4(tree, "mnt")
    meta = write_metadata(str(tmp_path / "m.json"), "img-mnt", world.offered(tmp_path, image), world.sha256(image))
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(os.path.join(node.root, "mnt/state/intruder"))
    assert open(os.path.join(node.root, "mnt/state/db/records")).read() == "node data that must survive\n"


def test_a_symlink_where_a_preserved_path_is_never_followed(w, node, tmp_path):
    # the image puts /home -> / : /home is preserved and keeps its type, so the image
    # is refused and nothing is written through the link
    tree = w.tree("img-homelink", image_id="img-homelink", release=world.RELEASE, variant="B")
    os.rmdir(os.path.join(tree, "home"))
    os.symlink("/", os.path.join(tree, "home"))
    image = w.ext4(tree, "homelink")
    meta = write_metadata(str(tmp_path / "m.json"), "img-homelink", world.offered(tmp_path, image), world.sha256(image))
    r = untouched(node, lambda: agent(node.root, "apply", metadata=meta))
    assert r.returncode == 1 and "/home" in r.stderr and "symlink" in r.stderr, r.stderr
    assert os.path.isdir(os.path.join(node.root, "home")) and not os.path.islink(os.path.join(node.root, "home"))


def test_a_root_with_filesystem_errors_is_not_updated(w, tmp_path):
    root_img = str(tmp_path / "root.ext4")
    sandbox.make_root_image(w.tree_a, root_img)
    subprocess.run(["debugfs", "-w", "-R", "ssv error_count 3", root_img], check=True,
                   capture_output=True)
    n = sandbox.SandboxNode(str(tmp_path / "node"), root_img).start()
    try:
        r = untouched(n, lambda: agent(n.root, "apply", metadata=w.metadata_for_b(str(tmp_path))))
        assert r.returncode == 1 and "recorded 3 errors" in r.stderr and "fsck" in r.stderr
    finally:
        n.stop()
