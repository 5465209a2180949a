"""sources.metadata_url.UrlSource against a real HTTP server with ETag/Last-Modified."""

import http.server
import json
import threading

import pytest

from update_agent.errors import AgentError, BadInput
from update_agent.sources import metadata_url

LAST_MODIFIED = "Wed, 01 May 2024 10:00:00 GMT"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        srv = self.server
        srv.seen.append({k: self.headers.get(k) for k in ("If-None-Match", "If-Modified-Since", "Accept")})
        if srv.code != 200:
            self.send_response(srv.code)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        etag = '"%d"' % srv.version
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", LAST_MODIFIED)
        self.send_header("Content-Length", str(len(srv.body)))
        self.end_headers()
        self.wfile.write(srv.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.seen, srv.code, srv.version = [], 200, 1
    srv.body = json.dumps({"image_id": "img-1"}).encode()
    threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True).start()
    srv.url = "http://127.0.0.1:%d/metadata" % srv.server_address[1]
    yield srv
    srv.shutdown()
    srv.server_close()


def publish(srv, doc):
    srv.body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    srv.version += 1


def test_conditional_get(server):
    src = metadata_url.UrlSource(server.url, timeout=5)
    assert src.poll() == {"image_id": "img-1"}
    assert server.seen[0]["If-None-Match"] is None and server.seen[0]["Accept"] == "application/json"
    assert src.poll() is None
    assert server.seen[1]["If-None-Match"] == '"1"'
    assert server.seen[1]["If-Modified-Since"] == LAST_MODIFIED


def test_changed_document_is_returned(server):
    src = metadata_url.UrlSource(server.url, timeout=5)
    src.poll()
    publish(server, {"image_id": "img-2"})
    assert src.poll() == {"image_id": "img-2"}
    assert src.poll() is None
    assert server.seen[-1]["If-None-Match"] == '"2"'


def test_invalid_json_is_fetched_again(server):
    src = metadata_url.UrlSource(server.url, timeout=5)
    src.poll()
    publish(server, b"{not json")
    with pytest.raises(BadInput, match="not valid JSON"):
        src.poll()
    with pytest.raises(BadInput):
        src.poll()  # the bad document's ETag was not remembered
    assert server.seen[-1]["If-None-Match"] == '"1"'
    publish(server, {"image_id": "img-3"})
    assert src.poll() == {"image_id": "img-3"}


def test_server_error_names_url(server):
    server.code = 500
    with pytest.raises(AgentError, match="metadata_url %s: HTTP 500" % server.url) as e:
        metadata_url.UrlSource(server.url, timeout=5).poll()
    assert not isinstance(e.value, BadInput)


def test_unreachable_names_url(server):
    url = server.url
    server.shutdown()
    server.server_close()
    with pytest.raises(AgentError, match="metadata_url %s" % url):
        metadata_url.UrlSource(url, timeout=5).poll()


def test_oversized_document(server, monkeypatch):
    monkeypatch.setattr(metadata_url, "MAX_BYTES", 64)
    src = metadata_url.UrlSource(server.url, timeout=5)
    publish(server, b'{"image_id": "%s"}' % (b"x" * 48))  # exactly 64 bytes
    assert len(server.body) == 64 and src.poll() == {"image_id": "x" * 48}
    publish(server, {"image_id": "x" * 49})
    with pytest.raises(BadInput, match="larger than 64 bytes"):
        src.poll()


def test_deeply_nested_document_is_bad_input_naming_the_url(server):
    src = metadata_url.UrlSource(server.url, timeout=5)
    publish(server, b'{"a": ' + b"[" * 100000 + b"]" * 100000 + b"}")
    with pytest.raises(BadInput, match="metadata_url %s: metadata nests deeper" % server.url):
        src.poll()
