"""Download an image into a .part file: resumable, size-limited and hashed.

Only file://, http:// and https:// are fetched; TLS is always verified and a
redirect may only lead to http(s). The caller renames the .part when done.
"""

import hashlib
import http.client
import logging
import os
import re
import ssl
import stat
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from update_agent.errors import AgentError, BadInput

LOG = logging.getLogger(__name__)

CHUNK = 1 << 20
_ZEROS = bytes(CHUNK)
_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_WEB = ("http", "https")


@dataclass(frozen=True)
class Digest:
    algorithm: str
    hexdigest: str

    @classmethod
    def parse(cls, text, key="image_digest"):
        """Parse 'sha256:<64 hex>' or 'sha512:<128 hex>' (hex case-insensitive)."""
        if isinstance(text, str):
            algorithm, sep, hexdigest = text.partition(":")
            algorithm, hexdigest = algorithm.lower(), hexdigest.lower()
            if sep and _HEX_LENGTHS.get(algorithm) == len(hexdigest) and _HEX.fullmatch(hexdigest):
                return cls(algorithm, hexdigest)
        raise BadInput("%s must be 'sha256:<64 hex digits>' or 'sha512:<128 hex digits>', got %s"
                       % (key, _show(text)))

    def __str__(self):
        return "%s:%s" % (self.algorithm, self.hexdigest)

    def new_hasher(self):
        return hashlib.new(self.algorithm)


def fetch(url, dest, *, max_bytes, digest=None, opener=None, timeout=30, progress=None,
          max_redirects=5, cafile=None):
    """Stream url into dest (a .part file, resumed if present); return its digest.

    cafile (a CA bundle trusted instead of the system's) only shapes the
    default opener; an injected opener brings its own TLS settings.
    """
    scheme, path = _check_url(url)
    dest = os.fspath(dest)
    if not dest.endswith(".part"):
        # On a digest mismatch dest is deleted: never let that be a real image.
        raise ValueError("fetch destination must end in .part: %r" % dest)
    shown = _redact(url)
    algorithm = digest.algorithm if digest else "sha256"
    # O_NOFOLLOW: a link planted at dest must not lead the download elsewhere
    fd = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "r+b") as out:
        sink = _Sink(shown, dest, out, algorithm, max_bytes, progress)
        if scheme == "file":
            _from_file(sink, path)
        else:
            _from_http(sink, url, opener or build_opener(max_redirects, cafile), timeout)
        got = Digest(algorithm, sink.hasher.hexdigest())
        out.flush()
        os.fsync(out.fileno())  # a cached image must never be torn by a crash
    if digest is not None and got != digest:
        _unlink(dest)
        raise AgentError("image digest mismatch for %s: expected %s, got %s" % (shown, digest, got))
    LOG.info("fetched %s (%d bytes, %s)", shown, sink.done, got)
    return got


def build_opener(max_redirects=5, cafile=None):
    """An OpenerDirector that verifies TLS and limits redirects."""
    try:
        context = ssl.create_default_context(cafile=cafile)
    except OSError as e:  # ssl.SSLError is an OSError too
        raise BadInput("cannot load CA bundle %r: %s" % (cafile, _one_line(e)))
    return urllib.request.build_opener(
        _RedirectLimiter(max_redirects), urllib.request.HTTPSHandler(context=context))


class _RedirectLimiter(urllib.request.HTTPRedirectHandler):
    """Follow at most `limit` redirects, and only to http(s)."""

    def __init__(self, limit):
        self.limit = limit
        self.max_redirections = limit + 1  # our own count below fires first

    def http_error_302(self, req, fp, code, msg, headers):
        target = headers.get("location") or headers.get("uri")
        if target:
            target = urllib.parse.urljoin(req.full_url, target)
            if urllib.parse.urlsplit(target).scheme.lower() not in _WEB:
                fp.close()
                raise AgentError("refusing redirect from %s to %s: only http(s) is allowed"
                                 % (_redact(req.full_url), _show(_redact(target))))
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        hops = getattr(req, "update_agent_hops", 0) + 1
        if hops > self.limit:
            fp.close()
            raise AgentError("too many redirects (limit %d) fetching %s"
                             % (self.limit, _redact(req.full_url)))
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.update_agent_hops = hops
        return new


class _Sink:
    """The open .part file with its running hash, size and limit."""

    def __init__(self, url, dest, out, algorithm, max_bytes, progress):
        self.url, self.dest, self.out = url, dest, out
        self.algorithm, self.max_bytes, self.progress = algorithm, max_bytes, progress
        self.done, self.hasher = 0, hashlib.new(algorithm)

    def restart(self):
        """Forget what the .part held and write it from the start."""
        self.out.seek(0)
        self.out.truncate()
        self.done, self.hasher = 0, hashlib.new(self.algorithm)

    def resume(self):
        """Hash the bytes already present (the digest covers the whole file)."""
        self.out.seek(0)
        for chunk in iter(lambda: self.out.read(CHUNK), b""):
            self.hasher.update(chunk)
            self.done += len(chunk)
        if self.done > self.max_bytes:
            LOG.info("%s: existing %d bytes exceed the limit; starting over", self.dest, self.done)
            self.restart()
        return self.done

    def check_total(self, total):
        if total is not None and total > self.max_bytes:
            self.discard()
            raise AgentError("%s is %d bytes, over the limit of %d bytes"
                             % (self.url, total, self.max_bytes))

    def copy(self, read, total):
        while True:
            try:
                chunk = read(CHUNK)
            except (OSError, http.client.HTTPException) as e:
                # Transient: keep the .part so the next attempt resumes.
                raise AgentError("download of %s interrupted after %d bytes: %s"
                                 % (self.url, self.done, _one_line(e) or type(e).__name__))
            if not chunk:
                break
            self.done += len(chunk)
            if self.done > self.max_bytes:
                self.discard()
                raise AgentError("%s exceeded the limit of %d bytes while downloading"
                                 % (self.url, self.max_bytes))
            try:
                if len(chunk) == CHUNK and chunk == _ZEROS:
                    # raw disk images are mostly zeros: leave holes, keep the cache small
                    self.out.seek(CHUNK, os.SEEK_CUR)
                else:
                    self.out.write(chunk)
            except OSError as e:
                raise AgentError("cannot write %s: %s" % (self.dest, _one_line(e)))
            self.hasher.update(chunk)
            if self.progress:
                self.progress(self.done, total)
        try:
            self.out.truncate(self.out.tell())  # a trailing hole still counts as file size
        except OSError as e:
            raise AgentError("cannot write %s: %s" % (self.dest, _one_line(e)))
        if total is not None and self.done < total:
            raise AgentError("download of %s stopped after %d of %d bytes"
                             % (self.url, self.done, total))

    def discard(self):
        _unlink(self.dest)


def _from_file(sink, path):
    # Check before opening (opening a FIFO or device can block or act), and
    # again on the open descriptor in case the path was swapped meanwhile.
    try:
        _require_regular(sink, os.stat(path))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        raise AgentError("cannot open %s: %s" % (sink.url, e.strerror or e))
    try:
        size = _require_regular(sink, os.fstat(fd)).st_size
        src = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with src:
        sink.check_total(size)
        if sink.resume() > size:
            sink.restart()
        src.seek(sink.done)
        sink.copy(src.read, size)


def _require_regular(sink, st):
    if not stat.S_ISREG(st.st_mode):
        raise BadInput("%s is not a regular file" % sink.url)
    return st


def _from_http(sink, url, opener, timeout):
    have = sink.resume()
    headers = {"User-Agent": "update-agent", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = "bytes=%d-" % have
    LOG.info("fetching %s%s", sink.url, " from byte %d" % have if have else "")
    try:
        resp = opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        with e:
            if e.code == 416 and have:
                return _range_not_satisfiable(sink, url, opener, timeout, e.headers)
            if 400 <= e.code < 500:
                sink.discard()  # not transient: nothing to resume
            raise AgentError("download of %s failed: HTTP %s %s"
                             % (sink.url, e.code, _one_line(e.reason)))
    except urllib.error.URLError as e:
        raise AgentError("download of %s failed: %s" % (sink.url, _one_line(e.reason)))
    except (OSError, http.client.HTTPException) as e:
        raise AgentError("download of %s failed: %s" % (sink.url, _one_line(e) or type(e).__name__))
    with resp:
        length = _int(resp.headers.get("Content-Length"))
        if have and resp.status == 206:
            match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
            if not match or int(match.group(1)) != have:
                sink.discard()
                raise AgentError("%s answered Content-Range %s to a request from byte %d"
                                 % (sink.url, _show(resp.headers.get("Content-Range")), have))
            total = _int(match.group(3)) or (have + length if length is not None else None)
        elif resp.status == 200:
            if have:
                LOG.info("%s ignored the range request; starting over", sink.url)
                sink.restart()
            total = length
        else:
            raise AgentError("download of %s failed: unexpected HTTP %s" % (sink.url, resp.status))
        sink.check_total(total)
        sink.copy(resp.read, total)


def _range_not_satisfiable(sink, url, opener, timeout, headers):
    match = re.fullmatch(r"bytes \*/(\d+)", (headers.get("Content-Range") or "").strip())
    if match and int(match.group(1)) == sink.done:
        LOG.info("%s: the .part is already complete", sink.url)
        return
    sink.restart()  # the .part is longer than the image: it is not a prefix
    _from_http(sink, url, opener, timeout)


def _check_url(url):
    """Return (scheme, local path or None); BadInput for anything we won't fetch."""
    bad = BadInput("image URL %s is not a file://, http:// or https:// URL" % _show(url))
    # ASCII only: http.client cannot send anything else (percent-encode it).
    if not isinstance(url, str) or not url or not url.isascii() or not url.isprintable() or " " in url:
        raise bad
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        raise bad
    scheme = parts.scheme.lower()
    if scheme in _WEB and parts.hostname:
        return scheme, None
    if scheme == "file" and parts.netloc in ("", "localhost") and parts.path:
        return scheme, urllib.request.url2pathname(parts.path)
    raise bad


def _redact(url):
    """Hide a password in the URL before it reaches a log or an error."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc="%s:***@%s" % (parts.username, host)))


def _int(text):
    return int(text) if text and text.strip().isdigit() else None


def _one_line(value):
    return " ".join(str(value).split())


def _show(value):
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
