"""fetch() against real HTTP(S) servers on 127.0.0.1 and real files."""

import email.message
import hashlib
import io
import os
import random
import re
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import urllib.response
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from update_agent.errors import AgentError, BadInput
from update_agent.images.fetch import Digest, fetch

MiB = 1 << 20
DATA = random.Random(42).randbytes(3 * MiB + 12345)
HALF = len(DATA) // 2
SHA256 = Digest("sha256", hashlib.sha256(DATA).hexdigest())
LIMIT = 16 * MiB


class Handler(BaseHTTPRequestHandler):
    """Routes: /<behaviour>/<arg>; every request is logged as (path, Range)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        srv.log.append((self.path, self.headers.get("Range")))
        srv.hits[self.path] = srv.hits.get(self.path, 0) + 1
        name, _, arg = self.path.strip("/").partition("/")
        getattr(self, "route_" + name)(arg)

    def route_range(self, _):
        self.send_data(honour_range=True)

    def route_norange(self, _):
        self.send_data(honour_range=False)

    def send_data(self, honour_range):
        start, rng = 0, self.headers.get("Range")
        if honour_range and rng:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(DATA):
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % len(DATA))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(DATA) - 1, len(DATA)))
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(DATA) - start))
        self.end_headers()
        self.wfile.write(DATA[start:])

    def send_head_full(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(DATA)))
        self.end_headers()

    def route_drop(self, _):
        if self.server.hits[self.path] > 1:
            return self.send_data(honour_range=True)
        self.send_head_full()
        self.wfile.write(DATA[:HALF])  # then close cleanly, short of Content-Length

    def route_reset(self, _):
        if self.server.hits[self.path] > 1:
            return self.send_data(honour_range=True)
        self.send_head_full()
        self.wfile.write(DATA[:HALF])
        self.wfile.flush()
        # SO_LINGER 0: close() sends RST, the client sees "connection reset".
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def route_slow(self, _):
        self.send_head_full()
        self.wfile.write(DATA[:MiB + 10])
        self.wfile.flush()
        self.server.release.wait(10)

    def route_redirect(self, arg):
        n = int(arg)  # n redirects in all, then the image
        self.redirect("/redirect/%d" % (n - 1) if n > 1 else "/range/img")

    def route_to(self, arg):
        self.redirect(self.server.targets[arg])

    def redirect(self, location, code=302):
        self.send_response(code)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def route_status(self, arg):
        self.send_error(int(arg))

    def route_big(self, _):
        self.send_response(200)
        self.send_header("Content-Length", str(10 << 30))
        self.end_headers()
        self.wfile.write(DATA)

    def route_liar(self, _):
        self.send_response(200)  # no Content-Length: the body ends when we close
        self.end_headers()
        for _ in range(4):
            self.wfile.write(DATA)

    def route_badrange(self, _):
        self.send_response(206)
        self.send_header("Content-Range", "bytes 0-%d/%d" % (len(DATA) - 1, len(DATA)))
        self.send_header("Content-Length", str(len(DATA)))
        self.end_headers()
        self.wfile.write(DATA)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients hanging up on purpose are expected here

    def url(self, path):
        scheme = "https" if isinstance(self.socket, ssl.SSLSocket) else "http"
        return "%s://127.0.0.1:%d%s" % (scheme, self.server_port, path)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def make_server():
    started = []

    def make(tls=None):
        srv = Server(("127.0.0.1", 0), Handler)
        if tls:
            srv.socket = tls.wrap_socket(srv.socket, server_side=True)
        srv.log, srv.hits, srv.targets, srv.release = [], {}, {}, threading.Event()
        threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.release.set()
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def server(make_server):
    return make_server()


@pytest.fixture
def part(tmp_path):
    return tmp_path / "image.part"


def one_line(err):
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# --- success and resume -------------------------------------------------------

def test_full_download_with_progress(server, part):
    calls = []
    got = fetch(server.url("/range/img"), part, max_bytes=LIMIT,
                progress=lambda done, total: calls.append((done, total)))
    assert got == SHA256
    assert part.read_bytes() == DATA
    assert server.log == [("/range/img", None)]
    assert [c[0] for c in calls] == [MiB, 2 * MiB, 3 * MiB, len(DATA)]
    assert {c[1] for c in calls} == {len(DATA)}


def test_resume_sends_range_and_appends(server, part):
    part.write_bytes(DATA[:1000])
    assert fetch(server.url("/range/img"), part, max_bytes=LIMIT, digest=SHA256) == SHA256
    assert part.read_bytes() == DATA
    assert server.log == [("/range/img", "bytes=1000-")]


def test_resume_hash_covers_existing_bytes(server, part):
    part.write_bytes(b"x" * 1000)  # not a prefix of DATA: the digest must show it
    got = fetch(server.url("/range/img"), part, max_bytes=LIMIT)
    assert got.hexdigest == hashlib.sha256(b"x" * 1000 + DATA[1000:]).hexdigest()


def test_sha512_digest(server, part):
    want = Digest("sha512", hashlib.sha512(DATA).hexdigest())
    assert fetch(server.url("/range/img"), part, max_bytes=LIMIT, digest=want) == want


def test_server_ignoring_range_starts_over(server, part):
    part.write_bytes(b"x" * 1000)
    assert fetch(server.url("/norange/img"), part, max_bytes=LIMIT, digest=SHA256) == SHA256
    assert part.read_bytes() == DATA
    assert server.log == [("/norange/img", "bytes=1000-")]


def test_range_survives_redirects(server, part):
    part.write_bytes(DATA[:1000])
    assert fetch(server.url("/redirect/2"), part, max_bytes=LIMIT, digest=SHA256) == SHA256
    assert server.log[-1] == ("/range/img", "bytes=1000-")


def test_complete_part_is_not_downloaded_again(server, part):
    part.write_bytes(DATA)
    assert fetch(server.url("/range/img"), part, max_bytes=LIMIT, digest=SHA256) == SHA256
    assert server.log == [("/range/img", "bytes=%d-" % len(DATA))]


def test_part_longer_than_image_starts_over(server, part):
    part.write_bytes(DATA + b"junk")
    assert fetch(server.url("/range/img"), part, max_bytes=LIMIT, digest=SHA256) == SHA256
    assert part.read_bytes() == DATA
    assert server.log == [("/range/img", "bytes=%d-" % (len(DATA) + 4)), ("/range/img", None)]


def test_bad_content_range_discards_part(server, part):
    part.write_bytes(DATA[:1000])
    with pytest.raises(AgentError) as err:
        fetch(server.url("/badrange/img"), part, max_bytes=LIMIT)
    assert "Content-Range 'bytes 0-" in one_line(err)
    assert not part.exists()


def test_injected_opener(part):
    seen = []

    class Opener:
        def open(self, request, timeout):
            seen.append((request.full_url, request.get_header("Range"), timeout))
            headers = email.message.Message()
            headers["Content-Length"] = str(len(DATA))
            return urllib.response.addinfourl(io.BytesIO(DATA), headers, request.full_url, 200)

    got = fetch("https://images.invalid/x.img", part, max_bytes=LIMIT, opener=Opener(), timeout=7)
    assert got == SHA256
    assert seen == [("https://images.invalid/x.img", None, 7)]


# --- interruptions: the .part is kept and the next fetch resumes -------------

def test_dropped_connection_then_resume(server, part):
    url = server.url("/drop/img")
    with pytest.raises(AgentError) as err:
        fetch(url, part, max_bytes=LIMIT, digest=SHA256)
    assert one_line(err) == "download of %s stopped after %d of %d bytes" % (url, HALF, len(DATA))
    assert part.read_bytes() == DATA[:HALF]
    assert fetch(url, part, max_bytes=LIMIT, digest=SHA256) == SHA256
    assert server.log[-1] == ("/drop/img", "bytes=%d-" % HALF)
    assert part.read_bytes() == DATA


def test_reset_connection_then_resume(server, part):
    url = server.url("/reset/img")
    with pytest.raises(AgentError) as err:
        fetch(url, part, max_bytes=LIMIT, digest=SHA256)
    assert url in one_line(err)
    kept = part.read_bytes()
    assert len(kept) <= HALF and DATA.startswith(kept)
    assert fetch(url, part, max_bytes=LIMIT, digest=SHA256) == SHA256
    assert part.read_bytes() == DATA


def test_timeout_keeps_part(server, part):
    with pytest.raises(AgentError) as err:
        fetch(server.url("/slow/img"), part, max_bytes=LIMIT, timeout=0.5)
    assert "timed out" in one_line(err) and server.url("/slow/img") in str(err.value)
    assert part.read_bytes() == DATA[:MiB]
    assert fetch(server.url("/range/img"), part, max_bytes=LIMIT, digest=SHA256) == SHA256
    assert server.log[-1] == ("/range/img", "bytes=%d-" % MiB)


def test_server_error_keeps_part(server, part):
    part.write_bytes(b"abc")
    with pytest.raises(AgentError) as err:
        fetch(server.url("/status/500"), part, max_bytes=LIMIT)
    assert one_line(err).startswith("download of %s failed: HTTP 500 " % server.url("/status/500"))
    assert part.read_bytes() == b"abc"


def test_not_found_removes_part(server, part):
    part.write_bytes(b"abc")
    with pytest.raises(AgentError) as err:
        fetch(server.url("/status/404"), part, max_bytes=LIMIT)
    assert one_line(err) == "download of %s failed: HTTP 404 Not Found" % server.url("/status/404")
    assert not part.exists()


def test_connection_refused(part):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = "http://127.0.0.1:%d/img" % port
    with pytest.raises(AgentError) as err:
        fetch(url, part, max_bytes=LIMIT)
    assert url in one_line(err) and "refused" in str(err.value)


def test_password_not_shown(server, part):
    url = server.url("/status/404").replace("://", "://user:hunter2@")
    with pytest.raises(AgentError) as err:
        fetch(url, part, max_bytes=LIMIT)
    assert "user:***@127.0.0.1" in one_line(err) and "hunter2" not in str(err.value)


# --- size limit -----------------------------------------------------------------

def test_content_length_over_limit_refused_up_front(server, part):
    calls = []
    with pytest.raises(AgentError) as err:
        fetch(server.url("/big/img"), part, max_bytes=MiB, progress=lambda *a: calls.append(a))
    assert one_line(err) == "%s is %d bytes, over the limit of %d bytes" % (
        server.url("/big/img"), 10 << 30, MiB)
    assert calls == [] and not part.exists()


def test_lying_server_aborted_at_limit(server, part):
    calls = []
    with pytest.raises(AgentError) as err:
        fetch(server.url("/liar/img"), part, max_bytes=2 * MiB + 1,
              progress=lambda *a: calls.append(a))
    assert one_line(err) == "%s exceeded the limit of %d bytes while downloading" % (
        server.url("/liar/img"), 2 * MiB + 1)
    assert calls == [(MiB, None), (2 * MiB, None)]
    assert not part.exists()


def test_oversize_part_is_restarted(server, part):
    part.write_bytes(b"x" * (len(DATA) + 1))
    assert fetch(server.url("/range/img"), part, max_bytes=len(DATA), digest=SHA256) == SHA256
    assert server.log == [("/range/img", None)]


# --- digest -------------------------------------------------------------------

def test_digest_mismatch_removes_part(server, part):
    wrong = Digest("sha256", "0" * 64)
    with pytest.raises(AgentError) as err:
        fetch(server.url("/range/img"), part, max_bytes=LIMIT, digest=wrong)
    assert one_line(err) == "image digest mismatch for %s: expected %s, got %s" % (
        server.url("/range/img"), wrong, SHA256)
    assert not part.exists()


# --- redirects ----------------------------------------------------------------

def test_redirects_up_to_the_limit(server, part):
    assert fetch(server.url("/redirect/5"), part, max_bytes=LIMIT, max_redirects=5) == SHA256
    assert len(server.log) == 6


@pytest.mark.parametrize("start,limit", [(6, 5), (1, 0)])
def test_too_many_redirects(server, part, start, limit):
    with pytest.raises(AgentError) as err:
        fetch(server.url("/redirect/%d" % start), part, max_bytes=LIMIT, max_redirects=limit)
    assert "too many redirects (limit %d)" % limit in one_line(err)
    assert len(server.log) == limit + 1
    assert ("/range/img", None) not in server.log


@pytest.mark.parametrize("target", ["file://{secret}", "FILE://{secret}", "ftp://127.0.0.1/x",
                                    "data:,SECRET", "gopher://127.0.0.1/"])
def test_redirect_only_to_http(server, part, tmp_path, target):
    secret = tmp_path / "secret"
    secret.write_bytes(b"SECRET")
    server.targets["x"] = target.format(secret=secret)
    with pytest.raises(AgentError) as err:
        fetch(server.url("/to/x"), part, max_bytes=LIMIT)
    assert one_line(err).startswith("refusing redirect from %s to " % server.url("/to/x"))
    assert not isinstance(err.value, BadInput)
    assert part.read_bytes() == b""


# --- file:// ---------------------------------------------------------------------

def test_file_url(tmp_path, part):
    src = tmp_path / "src.img"
    src.write_bytes(DATA)
    calls = []
    assert fetch(src.as_uri(), part, max_bytes=LIMIT, digest=SHA256,
                 progress=lambda *a: calls.append(a)) == SHA256
    assert part.read_bytes() == DATA
    assert calls[-1] == (len(DATA), len(DATA)) and len(calls) == 4


@pytest.mark.parametrize("existing", [DATA[:5000], DATA + b"junk"], ids=["prefix", "longer"])
def test_file_url_resume(tmp_path, part, existing):
    src = tmp_path / "src.img"
    src.write_bytes(DATA)
    part.write_bytes(existing)
    assert fetch(src.as_uri(), part, max_bytes=LIMIT, digest=SHA256) == SHA256
    assert part.read_bytes() == DATA


def test_file_url_over_limit(tmp_path, part):
    src = tmp_path / "src.img"
    src.write_bytes(DATA)
    with pytest.raises(AgentError) as err:
        fetch(src.as_uri(), part, max_bytes=MiB)
    assert "over the limit of %d bytes" % MiB in one_line(err)
    assert not part.exists()


def test_file_url_missing(tmp_path, part):
    url = (tmp_path / "nope.img").as_uri()
    with pytest.raises(AgentError) as err:
        fetch(url, part, max_bytes=LIMIT)
    assert not isinstance(err.value, BadInput)
    assert one_line(err) == "cannot open %s: No such file or directory" % url


def _fifo(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    return tmp_path / "fifo"


@pytest.mark.parametrize("make", [lambda t: t, lambda t: "/dev/zero", _fifo],
                         ids=["directory", "dev-zero", "fifo"])
def test_file_url_not_regular(tmp_path, part, make):
    url = "file://%s" % make(tmp_path)
    with pytest.raises(BadInput) as err:
        fetch(url, part, max_bytes=LIMIT)
    assert one_line(err) == "%s is not a regular file" % url
    assert part.read_bytes() == b""


# --- refused input ------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "ftp://127.0.0.1/img", "data:,hello", "gopher://127.0.0.1/", "/srv/images/img",
    "images/img", "", "http://", "https:///img", "file://otherhost/img", "file://",
    "http://127.0.0.1/a b", "http://127.0.0.1/a\nb", "http://127.0.0.1/\u00e9", None, b"http://x/",
])
def test_unsupported_urls(part, url):
    with pytest.raises(BadInput) as err:
        fetch(url, part, max_bytes=LIMIT)
    assert one_line(err) == "image URL %r is not a file://, http:// or https:// URL" % (url,)
    assert not part.exists()


def test_destination_must_be_part(tmp_path):
    with pytest.raises(ValueError):
        fetch("http://127.0.0.1/img", tmp_path / "image.img", max_bytes=LIMIT)


# --- TLS ---------------------------------------------------------------------------

@pytest.fixture
def tls_server(make_server, tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl CLI not available to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return make_server(tls=ctx), cert


def test_https_verified(tls_server, part):
    srv, cert = tls_server
    url = srv.url("/range/img")
    with pytest.raises(AgentError) as err:
        fetch(url, part, max_bytes=LIMIT)
    assert url in one_line(err) and "CERTIFICATE_VERIFY_FAILED" in str(err.value)
    assert part.read_bytes() == b"" and srv.log == []
    assert fetch(url, part, max_bytes=LIMIT, cafile=str(cert), digest=SHA256) == SHA256
    assert part.read_bytes() == DATA


def test_bad_cafile(tmp_path, part):
    with pytest.raises(BadInput) as err:
        fetch("https://127.0.0.1/img", part, max_bytes=LIMIT, cafile=str(tmp_path / "no.pem"))
    assert str(tmp_path / "no.pem") in one_line(err)


def test_zero_runs_are_stored_as_holes(tmp_path):
    # a raw disk image is mostly zeros: the cached copy must not use that space
    src = tmp_path / "disk.raw"
    with open(src, "wb") as f:
        f.write(b"boot" * 1024)
        f.seek(64 << 20)
        f.write(b"tail data")
    dest = tmp_path / "img.part"
    got = fetch(src.as_uri(), str(dest), max_bytes=1 << 30)
    assert dest.stat().st_size == src.stat().st_size
    assert dest.stat().st_blocks * 512 < 4 << 20, "zeros were written out"
    assert str(got) == "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
