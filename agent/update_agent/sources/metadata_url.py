"""Metadata polled from a URL (config metadata_url), with conditional GETs.

ETag and Last-Modified are remembered, so an unchanged document costs the
server a 304 and no body.
"""

import http.client
import logging
import urllib.error
import urllib.request

from update_agent import nesting
from update_agent.errors import AgentError, BadInput
from update_agent.http import Http

LOG = logging.getLogger(__name__)

NAME = "url"
MAX_BYTES = 16 << 20


class UrlSource:
    def __init__(self, url, timeout=10, opener=None):
        self.url = url
        self.timeout = timeout
        self.opener = opener or Http()
        self.etag = None
        self.last_modified = None

    def poll(self):
        """The metadata dict if it changed since the last poll, else None."""
        req = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        if self.etag:
            req.add_header("If-None-Match", self.etag)
        if self.last_modified:
            req.add_header("If-Modified-Since", self.last_modified)
        try:
            with self.opener.open(req, timeout=self.timeout) as resp:
                body = resp.read(MAX_BYTES + 1)
                etag, modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
        except urllib.error.HTTPError as e:
            if e.code == 304:
                return None
            raise AgentError("metadata_url %s: HTTP %d %s" % (self.url, e.code, e.reason))
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            raise AgentError("metadata_url %s: %s" % (self.url, getattr(e, "reason", e) or
                                                       type(e).__name__))
        if len(body) > MAX_BYTES:
            raise BadInput("metadata_url %s: document larger than %d bytes" % (self.url, MAX_BYTES))
        try:
            metadata = nesting.loads(body, "metadata_url %s" % self.url)
        except ValueError as e:
            raise BadInput("metadata_url %s: not valid JSON: %s" % (self.url, e))
        # remembered only once the document parsed, so a bad one is fetched again
        self.etag, self.last_modified = etag, modified
        return metadata
