"""A private CA (config ca_file) is trusted by every https request the agent makes,
not only image fetches: metadata_url, Heat signals and FleetLock, against a real
TLS server on 127.0.0.1 whose certificate that CA signed."""

import json
import ssl
import subprocess
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from update_agent.cli import main as cli
from update_agent.errors import AgentError, BadInput
from update_agent.http import Http
from update_agent.sources import heat
from update_agent.sources.metadata_url import UrlSource


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """(CA bundle, server cert, server key): a CA of our own and a cert it signed."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "srv.key", "-out", "srv.csr", cwd=d)
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "1", "-extfile", "san.cnf", "-out", "srv.pem", cwd=d)
    return d / "ca.pem", d / "srv.pem", d / "srv.key"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _answer(self, body):
        self.server.seen.append((self.command, self.path, self.rfile.read(
            int(self.headers.get("Content-Length") or 0))))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._answer(json.dumps({"image_id": "img-7"}).encode())

    def do_POST(self):
        self._answer(b"{}")


@pytest.fixture
def server(pki):
    _, cert, key = pki
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.seen = []
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def url(srv, path):
    return "https://127.0.0.1:%d%s" % (srv.server_port, path)


def test_metadata_url_trusts_the_ca_file_and_refuses_without_it(pki, server):
    ca, _, _ = pki
    with pytest.raises(AgentError, match="CERTIFICATE_VERIFY_FAILED") as err:
        UrlSource(url(server, "/meta"), opener=Http()).poll()
    assert "\n" not in str(err.value) and server.seen == []
    assert UrlSource(url(server, "/meta"), opener=Http(cafile=str(ca))).poll() == {"image_id": "img-7"}


def test_a_heat_signal_trusts_the_ca_file(pki, server):
    ca, _, _ = pki
    d = heat.Deployment("d1", "d1", {"deploy_signal_transport": "CFN_SIGNAL",
                                     "deploy_signal_id": url(server, "/signal")})
    body = heat.payload(message="done")
    with pytest.raises(AgentError, match="CERTIFICATE_VERIFY_FAILED"):
        heat.Signaller(opener=Http(), retries=0).send(d, body)
    assert heat.Signaller(opener=Http(cafile=str(ca)), retries=0).send(d, body) is True
    assert [(m, p, json.loads(b)["deploy_stdout"]) for m, p, b in server.seen] == [("POST", "/signal", "done")]


def test_the_command_line_takes_its_ca_file_from_the_config_for_fleetlock(pki, server, tmp_path, capsys):
    ca, _, _ = pki
    root = tmp_path / "root"
    root.mkdir()
    conf = tmp_path / "update-agent.conf"
    base = "[coordination]\nbackend = %s\n" % url(server, "")
    conf.write_text(base)
    argv = ["--root", str(root), "--config", str(conf), "slot", "release", "--node-id", "n1"]
    assert cli.main(argv) != 0
    said = capsys.readouterr().err.strip()
    assert len(said.splitlines()) == 1 and "CERTIFICATE_VERIFY_FAILED" in said and server.seen == []
    conf.write_text("[agent]\nca_file = %s\n" % ca + base)
    assert cli.main(argv) == 0
    assert [(m, p, json.loads(b)["client_params"]["id"]) for m, p, b in server.seen] == \
        [("POST", "/v1/steady-state", "n1")]


def test_a_ca_file_that_cannot_be_loaded_is_named(tmp_path):
    missing = tmp_path / "no-such-ca.pem"
    with pytest.raises(BadInput) as err:
        Http(cafile=str(missing)).open(urllib.request.Request("https://127.0.0.1:1/"), timeout=1)
    assert str(missing) in str(err.value) and "\n" not in str(err.value)
