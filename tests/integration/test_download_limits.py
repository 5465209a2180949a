"""Downloads cannot stall an update nor fill the state dir: real trickling HTTP
servers on 127.0.0.1, real sandbox nodes with a small state filesystem."""

import fcntl
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import world
from update_agent.errors import AgentError
from update_agent.images.fetch import Pace, fetch
from update_agent.node.paths import NodePaths
from world import agent, write_metadata

pytestmark = [pytest.mark.integration]

MiB = 1 << 20
CLAIMED = 10 * MiB  # what the trickling server says it will send


class Trickle(BaseHTTPRequestHandler):
    """/trickle: claims CLAIMED bytes, sends one every 0.1 s (for at most 60 s).
    /flood/<n>: claims n bytes (or nothing if n is 0) and sends 64 MiB."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        name, _, arg = self.path.strip("/").partition("/")
        getattr(self, "route_" + name)(arg)

    def route_trickle(self, _):
        self.send_response(200)
        self.send_header("Content-Length", str(CLAIMED))
        self.end_headers()
        give_up = time.monotonic() + 60  # a bound for a broken agent, not a test timing
        try:
            while time.monotonic() < give_up:
                self.wfile.write(b"x")
                self.wfile.flush()
                self.server.trickling.set()
                if self.server.release.wait(0.1):
                    return
        except OSError:
            pass  # the agent hung up: what it should do

    def route_flood(self, claim):
        self.send_response(200)
        if int(claim):
            self.send_header("Content-Length", claim)
        self.end_headers()
        try:
            for _ in range(64):
                self.wfile.write(os.urandom(MiB))
        except OSError:
            pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    srv.trickling, srv.release = threading.Event(), threading.Event()
    srv.url = "http://127.0.0.1:%d" % srv.server_address[1]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)


def one_line(text):
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# --- fetch() ------------------------------------------------------------------
def test_trickling_server_is_abandoned_below_the_minimum_rate(server, tmp_path):
    part = str(tmp_path / "img.part")
    url = server.url + "/trickle"
    with pytest.raises(AgentError) as err:
        fetch(url, part, max_bytes=CLAIMED, pace=Pace(min_rate=1000, window_s=1))
    message = one_line(str(err.value))
    assert url in message and "bytes/s" in message and "download_min_rate = 1000" in message
    # like any interrupted download, the .part stays for the next attempt to resume
    assert 0 < os.path.getsize(part) < CLAIMED


def test_a_download_past_its_deadline_is_abandoned(server, tmp_path):
    part = str(tmp_path / "img.part")
    url = server.url + "/trickle"
    with pytest.raises(AgentError) as err:
        fetch(url, part, max_bytes=CLAIMED, pace=Pace(deadline_s=1))
    message = one_line(str(err.value))
    assert url in message and "download_timeout = 1" in message
    assert os.path.exists(part)


# --- the agent ----------------------------------------------------------------
@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    return world.World(str(tmp_path_factory.mktemp("limits")))


def _config(tmp_path, text):
    path = tmp_path / "update-agent.conf"
    path.write_text("[agent]\n" + text)
    return str(path)


def _flock_is_free(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _state_files(node):
    state = NodePaths(root=node.root).state_dir
    return {os.path.relpath(os.path.join(d, f), state)
            for d, _, files in os.walk(state) for f in files}


def test_slow_download_leaves_os_refresh_config_free_then_is_abandoned(w, node, server,
                                                                      tmp_path):
    url = server.url + "/trickle"
    meta = write_metadata(str(tmp_path / "m.json"), "img-slow", url, "sha256:" + "0" * 64)
    conf = _config(tmp_path, "download_min_rate = 1K\ndownload_rate_window = 30\n"
                            "stage_space_margin = 0\n")
    paths = NodePaths(root=node.root)
    before = world.snapshot(node.root)
    result = {}
    run = threading.Thread(target=lambda: result.update(
        r=agent(node.root, "apply", metadata=meta, config=conf)))
    run.start()
    try:
        assert server.trickling.wait(60), "the agent never started the download"
        # mid-download: the agent's own lock is held, os-refresh-config's is not
        assert _flock_is_free(paths.orc_lock)
        assert not _flock_is_free(paths.agent_lock)
    finally:
        run.join()
    r = result["r"]
    assert r.returncode == 1, r.stderr
    line = one_line(r.stderr)
    assert url in line and "bytes/s" in line and "download_min_rate = 1024" in line, line
    assert world.snapshot(node.root) == before, "the root changed"


@pytest.fixture
def small_state(w, tmp_path):
    n = w.node(str(tmp_path), state_mb=16)
    yield n
    n.stop()


def test_an_image_larger_than_the_free_state_dir_is_refused_with_numbers(small_state, server,
                                                                         tmp_path):
    url = server.url + "/flood/%d" % (64 * MiB)
    meta = write_metadata(str(tmp_path / "m.json"), "img-big", url, "sha256:" + "0" * 64)
    before_root, before_state = world.snapshot(small_state.root), _state_files(small_state)
    r = agent(small_state.root, "apply", metadata=meta)
    assert r.returncode == 1, r.stderr
    line = one_line(r.stderr)
    assert "not enough room to stage the image" in line and str(64 * MiB) in line, line
    assert "are free" in line and "stage_space_margin" in line
    assert not [f for f in _state_files(small_state) - before_state if f.startswith("images/")]
    assert world.snapshot(small_state.root) == before_root


def test_a_download_that_fills_the_state_dir_removes_its_part(small_state, server, tmp_path):
    # no Content-Length: nothing to check up front; the disk fills mid-download
    url = server.url + "/flood/0"
    meta = write_metadata(str(tmp_path / "m.json"), "img-fill", url, "sha256:" + "0" * 64)
    r = agent(small_state.root, "apply", metadata=meta)
    assert r.returncode == 1, r.stderr
    line = one_line(r.stderr)
    assert "No space left" in line and "partial download was removed" in line, line
    assert not [f for f in _state_files(small_state) if f.endswith(".part")]


# --- file:// scope: the default file_image_dirs ---------------------------------
def _images_in(node):
    return NodePaths(root=node.root).node("/var/lib/update-agent/images-in")


def test_a_file_url_inside_file_image_dirs_is_applied(w, node, tmp_path):
    meta = write_metadata(str(tmp_path / "m.json"), "img-B", node.offer(w.image_b, "b.img"),
                          world.sha256(w.image_b))
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 0, r.stderr
    assert open(os.path.join(node.root, "etc/image_id")).read().strip() == "img-B"


def _outside(tmp_path, kind, node):
    if kind == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
        return path
    if kind == "link":  # a link in an allowed directory to a file outside it
        secret = tmp_path / "secret"
        secret.write_text("not for the metadata\n")
        link = os.path.join(_images_in(node), "img")
        os.symlink(str(secret), link)
        return link
    return kind


# (a directory, file:///, is directory_images' business: test_hostile.py)
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "/etc/shadow", "link"])
def test_a_file_url_outside_file_image_dirs_is_refused_by_name(node, tmp_path, kind):
    path = _outside(tmp_path, kind, node)
    url = "file://" + path
    meta = write_metadata(str(tmp_path / "m.json"), "img-x", url, "sha256:" + "0" * 64)
    before = world.snapshot(node.root)
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 2, r.stderr
    line = one_line(r.stderr)
    assert url in line and "outside file_image_dirs" in line, line
    assert world.snapshot(node.root) == before


def test_a_file_url_outside_file_image_dirs_is_never_read(node, tmp_path, need_mounts):
    import subprocess
    atimes = tmp_path / "atimes"
    atimes.mkdir()
    # strictatime: every read moves the atime, so a read would show
    subprocess.run(["mount", "-t", "tmpfs", "-o", "strictatime,size=1m", "tmpfs", str(atimes)],
                   check=True)
    try:
        image = atimes / "image.raw"
        image.write_bytes(b"x" * 4096)
        os.utime(image, (1000000, 1000000))
        meta = write_metadata(str(tmp_path / "m.json"), "img-x", "file://%s" % image,
                              "sha256:" + "0" * 64)
        r = agent(node.root, "apply", metadata=meta)
        assert r.returncode == 2 and "outside file_image_dirs" in r.stderr, r.stderr
        assert os.stat(image).st_atime == 1000000
        image.read_bytes()
        assert os.stat(image).st_atime != 1000000  # the check above could see a read
    finally:
        subprocess.run(["umount", str(atimes)], check=True)


def test_a_digest_mismatch_of_a_file_url_does_not_show_its_digest(w, node, tmp_path):
    meta = write_metadata(str(tmp_path / "m.json"), "img-B", node.offer(w.image_b, "b.img"),
                          "sha256:" + "0" * 64)
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 1, r.stderr
    line = one_line(r.stderr)
    assert "digest mismatch" in line and world.sha256(w.image_b).partition(":")[2] not in line


# --- status -------------------------------------------------------------------
def test_status_shows_a_failed_download_not_the_success_before_it(w, node, server, tmp_path):
    r = agent(node.root, "apply", metadata=w.metadata_for_b(str(tmp_path)))
    assert r.returncode == 0, r.stderr
    url = server.url + "/trickle"
    meta = write_metadata(str(tmp_path / "c.json"), "img-C", url, "sha256:" + "0" * 64)
    conf = _config(tmp_path, "download_min_rate = 1K\ndownload_rate_window = 1\n"
                             "stage_space_margin = 0\n")
    r = agent(node.root, "apply", metadata=meta, config=conf)
    assert r.returncode == 1, r.stderr
    r = agent(node.root, "status", "--json")
    assert r.returncode == 0, r.stderr
    import json
    last = json.loads(r.stdout)["last_result"]
    assert last["image_id"] == "img-C" and last["result"] == "failed", last
    assert url in last["error"]
