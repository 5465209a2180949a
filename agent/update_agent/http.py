"""The one HTTP seam: everything that talks HTTP opens requests through an Http.

Http.open(request, timeout) returns a response (a context manager with read()
and headers) or raises urllib.error.HTTPError/URLError, as urllib does. This
one wraps a urllib OpenerDirector, so each caller keeps its TLS, CA and
redirect policy; a pooled client (keep-alive, parallel requests, Range) can
implement the same method later. Tests pass a fake with the same method.
"""

import urllib.request


class Http:
    def __init__(self, opener=None):
        # built lazily: a System made for a dry run or a unit test opens nothing
        self._opener = opener

    def open(self, request, timeout):
        if self._opener is None:
            self._opener = urllib.request.build_opener()
        return self._opener.open(request, timeout=timeout)
