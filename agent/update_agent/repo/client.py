"""A node's reads of an object repository over HTTP: records, metadata, content.

Everything but a record is named by its digest, and checked against it here
before anything uses it: the server, or a cache in between, is never trusted.
docs/repository.md is the format; decide/repo_format.py names its files.
"""

import hashlib
import http.client
import logging
import threading

from update_agent.decide import repo_format
from update_agent.errors import AgentError, BadInput, CommandFailed

LOG = logging.getLogger(__name__)

MAX_RECORD = 1 << 20
READ = 1 << 16


class Pace:
    """The download rules every repository fetch of one update shares: done within
    deadline_s (0: no limit), at least min_rate bytes/s over every window_s."""

    def __init__(self, deadline_s, min_rate, window_s, monotonic):
        self.deadline_s, self.min_rate, self.window_s = deadline_s, min_rate, window_s
        self.monotonic = monotonic
        self.started = monotonic()
        self.done = 0
        self.window = (self.started, 0)
        self._lock = threading.Lock()

    def count(self, n, what):
        with self._lock:
            self.done += n
            self._check(what)

    def _check(self, what):
        now = self.monotonic()
        if self.deadline_s and now - self.started > self.deadline_s:
            raise AgentError("download of %s abandoned: not done after %ds (download_timeout = "
                             "%d), %d bytes so far" % (what, now - self.started, self.deadline_s,
                                                       self.done))
        since, then = self.window
        if now - since < self.window_s:
            return
        rate = (self.done - then) / (now - since)
        if self.min_rate and rate < self.min_rate:
            raise AgentError("download of %s abandoned: %.0f bytes/s over the last %ds, below "
                             "download_min_rate = %d bytes/s" % (what, rate, now - since,
                                                                 self.min_rate))
        self.window = (now, self.done)


class Repo:
    """One repository at base_url, read through a keep-alive Pool (system.http)."""

    def __init__(self, system, base_url, pace, proxy="", cafile=None, max_bytes=32 << 30):
        self.system = system
        self.base_url = base_url.rstrip("/") + "/"
        self.pool = system.http.pool(self.base_url, proxy=proxy, cafile=cafile or None)
        self.pace = pace
        self.max_bytes = max_bytes
        self.requests = 0
        self._count = threading.Lock()

    def close(self):
        self.pool.close()

    def record(self, image_id):
        """The image's record (a dict), as repo_format.record_loads checks it."""
        path = repo_format.record_path(image_id)
        body = self.get(path, limit=MAX_RECORD)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput("%s is not an image record: not UTF-8" % self.pool.url(path))
        rec = repo_format.record_loads(text, self.pool.url(path))
        if rec.get("image_id") != image_id:
            raise BadInput("%s is the record of image %r, not %r"
                           % (self.pool.url(path), rec.get("image_id"), image_id))
        return rec

    def text(self, path, digest):
        """A zstd metadata file's text, checked against digest ("sha256:<hex>")."""
        data = self.unzstd(self.get(path), path)
        self._check(data, repo_format.hex_of(digest), path)
        try:
            return data.decode("utf-8", "surrogateescape")
        except UnicodeDecodeError:  # pragma: no cover - surrogateescape decodes any bytes
            raise BadInput("%s is not text" % self.pool.url(path))

    def get(self, path, span=None, limit=None, into=None):
        """The body of GET path (its bytes span=(first, length) only): bytes, or
        written to the open file `into` (then the byte count)."""
        limit = limit or self.max_bytes
        headers = {}
        if span is not None:
            headers["Range"] = "bytes=%d-%d" % (span[0], span[0] + span[1] - 1)
        url = self.pool.url(path)
        with self._count:
            self.requests += 1
        try:
            resp = self.pool.get(path, headers)
            with resp:
                _check_status(resp, url, span)
                return self._body(resp, url, span, limit, into)
        except (OSError, http.client.HTTPException) as e:
            raise AgentError("download of %s failed: %s" % (url, _one_line(e) or type(e).__name__))

    def _body(self, resp, url, span, limit, into):
        skip = span[0] if span is not None and resp.status == 200 else 0  # a server ignoring Range
        want = span[1] if span is not None else None
        chunks, got = [], 0
        while True:
            piece = resp.read1(READ) if hasattr(resp, "read1") else resp.read(READ)
            if not piece:
                break
            self.pace.count(len(piece), url)
            if skip:
                cut = min(skip, len(piece))
                piece, skip = piece[cut:], skip - cut
            if want is not None:
                piece = piece[:max(want - got, 0)]
            got += len(piece)
            if got > limit:
                raise AgentError("%s exceeded the limit of %d bytes while downloading" % (url, limit))
            if into is not None:
                into.write(piece)
            else:
                chunks.append(piece)
            if want is not None and got >= want:
                break
        if want is not None and got < want:
            raise AgentError("download of %s stopped after %d of %d bytes" % (url, got, want))
        return got if into is not None else b"".join(chunks)

    def unzstd(self, data, what):
        try:
            return self.system.run([self.system.which("zstd"), "-d", "-q", "-c"], input=data,
                                   binary=True).stdout
        except CommandFailed as e:
            raise AgentError("%s is not zstd data: %s" % (self.pool.url(what), _one_line(e.stderr)))

    def _check(self, data, hexdigest, what):
        got = hashlib.sha256(data).hexdigest()
        if got != hexdigest:
            raise AgentError("%s does not hold what its name says: sha256 %s, expected %s; it was "
                             "not used" % (self.pool.url(what), got, hexdigest))


def _check_status(resp, url, span):
    if resp.status == 206 and span is not None:
        first = (resp.headers.get("Content-Range") or "").partition(" ")[2].partition("-")[0]
        if first != str(span[0]):
            resp.read()
            raise AgentError("%s answered Content-Range %r to a request from byte %d"
                             % (url, resp.headers.get("Content-Range"), span[0]))
        return
    if resp.status == 200:
        return
    resp.read()  # the connection stays usable for the next request
    if 300 <= resp.status < 400:
        raise AgentError("download of %s failed: HTTP %s redirects to %s; a repository is "
                         "served directly" % (url, resp.status, resp.headers.get("Location")))
    raise AgentError("download of %s failed: HTTP %s %s" % (url, resp.status, _one_line(resp.reason)))


def _one_line(value):
    return " ".join(str(value).split())
