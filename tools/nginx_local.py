"""A throwaway nginx (Debian's nginx-core) on 127.0.0.1 serving one directory, for
tests and benchmarks: Range requests and keep-alive as a real origin does them, and
an access log that says what every request cost the origin.

The immutable files of an object repository are sent with a year's Cache-Control,
an image record with a short one, as docs/repository.md asks of an origin.
"""

import contextlib
import dataclasses
import os
import subprocess
import tempfile

from etcd_local import free_port, wait_port

LOG_FORMAT = "$request_method\\t$uri\\t$status\\t$bytes_sent\\t$body_bytes_sent\\t$http_range"

CONF = """\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 512; }}
http {{
    log_format counted "{log_format}";
    access_log {work}/access.log counted;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    sendfile on;
    keepalive_requests 100000;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port}{sndbuf};
        root {root};
        {limit}
        location ~ ^/(.*/)?images/[^/]+\\.json$ {{
            add_header Cache-Control "max-age=10";
        }}
        location / {{
            add_header Cache-Control "public, max-age=31536000, immutable";
        }}
    }}
}}
"""


# small writes, so that the limit holds for a file smaller than the socket's buffer
LIMIT = "limit_rate %d; sendfile off; output_buffers 1 16k;"


@dataclasses.dataclass(frozen=True)
class Served:
    """One request as the origin's access log tells it."""

    method: str
    path: str
    status: int
    bytes_sent: int   # headers and body
    body_bytes: int
    range: str        # the Range header asked for, "" for none


class Origin:
    def __init__(self, url, work):
        self.url = url
        self.work = work

    def served(self):
        """Every request served so far (nginx writes each line when the request ends)."""
        try:
            with open(os.path.join(self.work, "access.log"), encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            method, path, status, sent, body, rng = (line.split("\t") + [""] * 6)[:6]
            out.append(Served(method, path, int(status), int(sent), int(body),
                              "" if rng == "-" else rng))
        return out

    def body_bytes(self):
        return sum(s.body_bytes for s in self.served())


@contextlib.contextmanager
def origin(root, work=None, limit_rate=None):
    """Yield an Origin serving the directory root at Origin.url; stop it afterwards.
    limit_rate: bytes/s per connection (a slow origin), None for no limit."""
    work = work or tempfile.mkdtemp(prefix="nginx-")
    os.makedirs(work, exist_ok=True)
    port = free_port()
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(work=work, port=port, root=os.path.abspath(root),
                            log_format=LOG_FORMAT,
                            limit=LIMIT % limit_rate if limit_rate else "",
                            sndbuf=" sndbuf=16k" if limit_rate else ""))
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", work, "-e", os.path.join(work, "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        try:
            wait_port(port)
        except RuntimeError:
            proc.terminate()
            raise RuntimeError("nginx did not start: %s" % proc.communicate()[1].decode()[-500:])
        yield Origin("http://127.0.0.1:%d" % port, work)
    finally:
        proc.terminate()  # SIGTERM: the master stops its workers and exits
        proc.wait()
