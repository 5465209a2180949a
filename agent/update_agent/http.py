"""The one HTTP seam: everything that talks HTTP opens requests through an Http.

Http.open(request, timeout) returns a response (a context manager with read()
and headers) or raises urllib.error.HTTPError/URLError, as urllib does. This
one wraps a urllib OpenerDirector, so each caller keeps its TLS, CA and
redirect policy; a pooled client (keep-alive, parallel requests, Range) can
implement the same method later. Tests pass a fake with the same method.

Http.pool(base_url, ...) gives a Pool: keep-alive connections to one server (or
through one HTTP proxy), one per thread, for the many requests an object
repository's fetch makes; a fake Http gives a fake Pool.
"""

import http.client
import ssl
import threading
import urllib.parse
import urllib.request

from update_agent.errors import BadInput

# a reused keep-alive connection the server closed meanwhile fails like this: once
# more on a new connection, and only then is it an error
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class Http:
    """cafile: a CA bundle trusted for every https request instead of the system's
    (the config's ca_file): metadata_url, Heat signals, FleetLock, the repository."""

    def __init__(self, opener=None, cafile=None):
        # built lazily: a System made for a dry run or a unit test opens nothing
        self._opener = opener
        self.cafile = cafile or None

    def open(self, request, timeout):
        if self._opener is None:
            self._opener = urllib.request.build_opener(
                urllib.request.HTTPSHandler(context=tls_context(self.cafile)))
        return self._opener.open(request, timeout=timeout)

    def pool(self, base_url, proxy="", cafile=None, timeout=30):
        return Pool(base_url, proxy, cafile or self.cafile, timeout)


def tls_context(cafile):
    """A verifying TLS context trusting cafile (None: the system's CAs)."""
    try:
        return ssl.create_default_context(cafile=cafile)
    except OSError as e:  # ssl.SSLError is an OSError too
        raise BadInput("cannot load CA bundle %r (config ca_file): %s"
                       % (cafile, (str(e).strip().splitlines() or [type(e).__name__])[-1]))


class Pool:
    """GETs of paths below base_url over keep-alive connections, one per thread.

    proxy: an http:// proxy URL ("" for none): plain http goes to it with absolute
    URLs, https through a CONNECT tunnel. TLS is always verified (cafile: a CA
    bundle trusted instead of the system's). Redirects are not followed."""

    def __init__(self, base_url, proxy="", cafile=None, timeout=30):
        self.base = urllib.parse.urlsplit(base_url.rstrip("/") + "/")
        self.proxy = urllib.parse.urlsplit(proxy) if proxy else None
        self.cafile, self.timeout = cafile, timeout
        self._local = threading.local()
        self._all, self._lock = [], threading.Lock()

    def url(self, path):
        return urllib.parse.urlunsplit(self.base) + path

    def get(self, path, headers=None):
        """The response (http.client.HTTPResponse, not yet read) to GET base_url/path.
        The caller reads it to the end (or closes it) before the next get()."""
        for attempt in (0, 1):
            conn, fresh = self._connection()
            try:
                conn.request("GET", self._target(path), headers=self._headers(headers))
                return conn.getresponse()
            except _STALE:
                self._drop()
                if fresh or attempt:
                    raise
            except BaseException:
                self._drop()  # half a request on it: never reused
                raise

    def close(self):
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()

    def _target(self, path):
        full = self.base.path + path
        if self.proxy is not None and self.base.scheme == "http":
            return self.url(path)  # a proxy is asked for the absolute URL
        return urllib.parse.quote(full, safe="/%:@!$&'()*+,;=-._~")

    def _headers(self, extra):
        h = {"User-Agent": "update-agent", "Accept-Encoding": "identity",
             "Host": self.base.netloc.rpartition("@")[2]}
        h.update(extra or {})
        return h

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, False
        conn = self._local.conn = self._connect()
        with self._lock:
            self._all.append(conn)
        return conn, True

    def _drop(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _connect(self):
        host, port = self.base.hostname, self.base.port
        if self.base.scheme == "https":
            context = tls_context(self.cafile)
            if self.proxy is None:
                return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=context)
            conn = http.client.HTTPSConnection(self.proxy.hostname, self.proxy.port or 80,
                                               timeout=self.timeout, context=context)
            conn.set_tunnel(host, port or 443)
            return conn
        if self.proxy is not None:
            return http.client.HTTPConnection(self.proxy.hostname, self.proxy.port or 80,
                                              timeout=self.timeout)
        return http.client.HTTPConnection(host, port, timeout=self.timeout)
