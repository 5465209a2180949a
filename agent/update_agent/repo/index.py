"""Where each content of a repository image is: its delta index first, the full one
only when the delta does not locate everything a node needs.

The delta index of an image locates just the contents the image published before
it lacks: for a node on that image, all it can need, in a file the size of the
change. A node further behind, or one that lost contents, needs the full index,
which is fetched then, once.
"""

import logging

LOG = logging.getLogger(__name__)


class Index:
    def __init__(self, delta=None, full=None, fetch_full=None):
        """delta, full: {hex: (path, offset, length)}, or None when not at hand;
        fetch_full(): the full index, fetched and checked (and kept)."""
        self.delta, self.full, self.fetch_full = delta, full, fetch_full

    def locate(self, hexes):
        """{hex: location} of those of hexes the repository locates."""
        hexes = list(hexes)
        if self.full is None and (self.delta is None or any(h not in self.delta for h in hexes)):
            if self.delta is not None:
                LOG.info("the delta index lacks some of %d contents: fetching the full index",
                         len(hexes))
            self.full = self.fetch_full()
        where = self.full if self.full is not None else self.delta
        return {h: where[h] for h in hexes if h in where}
