"""Download an image into a .part file: resumable, size-limited, paced and hashed.

Only file://, http:// and https:// are fetched; TLS is always verified and a
redirect may only lead to http(s). The caller renames the .part when done.
"""

import errno
import hashlib
import http.client
import logging
import os
import re
import ssl
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from update_agent.errors import AgentError, BadInput
from update_agent.http import Http

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


@dataclass(frozen=True)
class Pace:
    """How long a download may take in all, and how slow it may get: at least
    min_rate bytes/s over every window_s seconds (curl's --speed-limit and
    --speed-time). 0 turns a limit off. monotonic: the system's clock seam."""

    deadline_s: float = 0
    min_rate: int = 0
    window_s: float = 60
    monotonic: object = time.monotonic


def fetch(url, dest, *, max_bytes, digest=None, opener=None, timeout=30, progress=None,
          max_redirects=5, cafile=None, pace=Pace(), room=None, file_dirs=None):
    """Stream url into dest (a .part file, resumed if present); return its digest.

    cafile (a CA bundle trusted instead of the system's) only shapes the
    default opener; an injected opener brings its own TLS settings.
    room(bytes, show): called once the size still to come is known, before a
    byte is written; it raises to refuse (a new, empty .part is then removed);
    show is False for a local file, whose size the refusal must not tell.
    file_dirs: host directories a file:// URL must lie in (None: anywhere);
    outside them the file is refused without being opened.
    """
    scheme, path = _check_url(url)
    if scheme == "file" and file_dirs is not None:
        path = _within(url, path, file_dirs)
    dest = os.fspath(dest)
    if not dest.endswith(".part"):
        # On a digest mismatch dest is deleted: never let that be a real image.
        raise ValueError("fetch destination must end in .part: %r" % dest)
    shown = _redact(url)
    algorithm = digest.algorithm if digest else "sha256"
    # O_NOFOLLOW: a link planted at dest must not lead the download elsewhere
    fd = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "r+b") as out:
        sink = _Sink(shown, dest, out, algorithm, max_bytes, progress, pace, room)
        if scheme == "file":
            _from_file(sink, path)
        else:
            _from_http(sink, url, opener or Http(build_opener(max_redirects, cafile)), timeout)
        got = Digest(algorithm, sink.hasher.hexdigest())
        try:
            out.flush()
            os.fsync(out.fileno())  # a cached image must never be torn by a crash
        except OSError as e:
            sink.write_failed(e)
    if digest is not None and got != digest:
        _unlink(dest)
        # a local file's digest is never shown: the metadata may have pointed at
        # a file it has no business learning anything about
        actual = "the file's own digest is not shown" if scheme == "file" else "got %s" % got
        raise AgentError("image digest mismatch for %s: expected %s, %s" % (shown, digest, actual))
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

    def __init__(self, url, dest, out, algorithm, max_bytes, progress, pace=Pace(), room=None):
        self.url, self.dest, self.out = url, dest, out
        self.algorithm, self.max_bytes, self.progress = algorithm, max_bytes, progress
        self.done, self.hasher = 0, hashlib.new(algorithm)
        self.pace, self.room = pace, room
        self.local = False  # a local file's size is not told either (see fetch)
        self.started = pace.monotonic()
        self.window = (self.started, 0)  # (when, bytes done then)

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
            size = "over" if self.local else "%d bytes, over" % total
            raise AgentError("%s is %s the limit of %d bytes" % (self.url, size, self.max_bytes))
        if total is not None and self.room is not None:
            try:
                self.room(max(total - self.done, 0), not self.local)
            except AgentError:
                if not self.done:
                    self.discard()  # refused before a byte was written: leave nothing
                raise

    def check_pace(self, done):
        """Abandon a download past its deadline or slower than the minimum rate."""
        now, pace = self.pace.monotonic(), self.pace
        if pace.deadline_s and now - self.started > pace.deadline_s:
            raise AgentError("download of %s abandoned: not done after %ds (download_timeout "
                             "= %d), %d bytes so far" % (self.url, now - self.started,
                                                         pace.deadline_s, done))
        since, then = self.window
        if now - since < pace.window_s:
            return
        rate = (done - then) / (now - since)
        if pace.min_rate and rate < pace.min_rate:
            raise AgentError("download of %s abandoned: %.0f bytes/s over the last %ds, below "
                             "download_min_rate = %d bytes/s" % (self.url, rate, now - since,
                                                                 pace.min_rate))
        self.window = (now, done)

    def paced(self, read1):
        """A read(n) that returns n bytes (fewer at the end) like read, but looks
        at the clock after every piece the source hands over, however small."""
        def read(n):
            buf = bytearray()
            self.check_pace(self.done)
            while len(buf) < n:
                piece = read1(n - len(buf))
                buf += piece
                if not piece:
                    break
                try:
                    self.check_pace(self.done + len(buf))
                except AgentError:
                    if not buf:
                        raise
                    break  # write what came; the next read raises again, for the resume
            return bytes(buf)
        return read

    def write_failed(self, e):
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            self.discard()  # a full state dir must not stay full of a partial image
            raise AgentError("cannot write %s: %s; the partial download was removed"
                             % (self.dest, _one_line(e.strerror or e)))
        raise AgentError("cannot write %s: %s" % (self.dest, _one_line(e)))

    def copy(self, read, total):
        read = self.paced(read)
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
                self.write_failed(e)
            self.hasher.update(chunk)
            if self.progress:
                self.progress(self.done, total)
        try:
            self.out.truncate(self.out.tell())  # a trailing hole still counts as file size
        except OSError as e:
            self.write_failed(e)
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
        sink.local = True
        sink.check_total(size)
        if sink.resume() > size:
            sink.restart()
        src.seek(sink.done)
        sink.copy(getattr(src, "read1", src.read), size)


def _within(url, path, dirs):
    """The real path of a file:// URL's file, if it lies in one of dirs.

    realpath only reads links, never opens the file: a FIFO or a device
    outside the directories is refused before anything could block or act."""
    real = os.path.realpath(path)
    for d in dirs:
        d = os.path.realpath(d)
        if real == d or real.startswith(d.rstrip("/") + "/"):
            return real
    raise BadInput("image URL %s is outside file_image_dirs (%s): it was not opened"
                   % (_show(url), ", ".join(dirs) or "none set"))


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
        # read1: one recv at a time, so a trickling server cannot hold read(CHUNK) for hours
        sink.copy(getattr(resp, "read1", resp.read), total)


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
