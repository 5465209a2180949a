"""Metadata from JSON files given on the command line (host paths).

Merged with os-apply-config's own rules (dicts deep-merged, later file wins,
lists replaced), by calling it as a library.
"""

import logging
import os

from os_apply_config import collect_config

from update_agent.errors import BadInput

LOG = logging.getLogger(__name__)

NAME = "files"
MAX_FILE = 16 << 20


def read(files):
    for path in files:
        if not os.path.isfile(path):
            raise BadInput("metadata file %s does not exist or is not a regular file" % path)
        if os.path.getsize(path) > MAX_FILE:
            raise BadInput("metadata file %s is larger than %d bytes" % (path, MAX_FILE))
    try:
        merged = collect_config.collect_config(list(files), [])
    except Exception as e:  # os-apply-config raises its own ConfigException
        raise BadInput("metadata %s: %s" % (", ".join(files), str(e).splitlines()[0]))
    LOG.debug("metadata from %s", files)
    return merged
