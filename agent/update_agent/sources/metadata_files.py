"""Metadata from JSON files given on the command line (host paths).

Merged with os-apply-config's own rules (dicts deep-merged, later file wins,
lists replaced), by calling it as a library.
"""

import logging
import os

from os_apply_config import collect_config

from update_agent import nesting
from update_agent.errors import BadInput

LOG = logging.getLogger(__name__)

NAME = "files"
MAX_FILE = 16 << 20


def _check_object(path):
    # os-apply-config merges a file that is not an object as if it were empty: say so
    try:
        with open(path, encoding="utf-8") as f:
            data = nesting.loads(f.read(), "metadata file %s" % path)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadInput("metadata file %s is not valid JSON: %s" % (path, str(e).splitlines()[0]))
    if not isinstance(data, dict):
        raise BadInput("metadata file %s must hold a JSON object, got a %s"
                       % (path, type(data).__name__))


def read(files):
    for path in files:
        if not os.path.isfile(path):
            raise BadInput("metadata file %s does not exist or is not a regular file" % path)
        if os.path.getsize(path) > MAX_FILE:
            raise BadInput("metadata file %s is larger than %d bytes" % (path, MAX_FILE))
        _check_object(path)
    try:
        merged = collect_config.collect_config(list(files), [])
    except Exception as e:  # os-apply-config raises its own ConfigException
        raise BadInput("metadata %s: %s" % (", ".join(files), str(e).splitlines()[0]))
    LOG.debug("metadata from %s", files)
    return merged
