"""What one node's client asks of an object repository, over HTTP: a list of files, each
whole or one byte range, fetched over keep-alive connections a few at a time, directly
or through a forward proxy. The cache tests run 20 of these at once, standing in for
20 agents (docs/caching.md).
"""

import http.client
import queue
import threading
import urllib.parse


class FetchError(Exception):
    pass


def fetch_paths(base_url, wanted, proxy=None, parallel=4, timeout=60):
    """Fetch wanted, [(path, None or (first, last))] relative to the repository at
    base_url, through the forward proxy at `proxy` (a URL) if given, on `parallel`
    connections. Returns {(path, range): body}; FetchError names the first failure."""
    todo = queue.Queue()
    for item in wanted:
        todo.put(item)
    got, failed = {}, []
    workers = [threading.Thread(target=_worker, args=(base_url, proxy, timeout, todo, got, failed))
               for _ in range(min(parallel, len(wanted)) or 1)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    if failed:
        raise FetchError(failed[0])
    return got


def _worker(base_url, proxy, timeout, todo, got, failed):
    connection = _Connection(base_url, proxy, timeout)
    try:
        while not failed:
            try:
                path, rng = todo.get_nowait()
            except queue.Empty:
                return
            got[(path, rng)] = connection.get(path, rng)
    except (OSError, http.client.HTTPException, FetchError) as e:
        failed.append("%s: %s" % (base_url, e))
    finally:
        connection.close()


class _Connection:
    """One keep-alive connection, to the origin or to the proxy (absolute URIs then)."""

    def __init__(self, base_url, proxy, timeout):
        self.base = urllib.parse.urlsplit(base_url.rstrip("/"))
        self.peer = urllib.parse.urlsplit(proxy) if proxy else self.base
        self.proxied = bool(proxy)
        self.timeout = timeout
        self.conn = None

    def get(self, path, rng):
        target = "%s/%s" % (self.base.path, path)
        if self.proxied:
            target = "%s://%s%s" % (self.base.scheme, self.base.netloc, target)
        headers = {"Range": "bytes=%d-%d" % rng} if rng else {}
        for attempt in (1, 2):  # a kept-alive connection the server closed meanwhile: once more
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.peer.hostname, self.peer.port or 80,
                                                       timeout=self.timeout)
            try:
                self.conn.request("GET", target, headers=headers)
                response = self.conn.getresponse()
                body = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt == 2:
                    raise
        expected = 206 if rng else 200
        if response.status != expected or (rng and len(body) != rng[1] - rng[0] + 1):
            raise FetchError("%s (range %s): HTTP %d, %d bytes" % (path, rng, response.status, len(body)))
        return body

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None
