"""Metadata from the node's os-collect-config cache, read under --root.

os_config_files.json lists the cache files in merge order; the paths it
names are node paths, so they are resolved inside the root as well.
"""

import logging
import os

from update_agent import nesting
from update_agent.errors import BadInput
from update_agent.sources import metadata_files

LOG = logging.getLogger(__name__)

NAME = "os-collect-config"


def cache_files(paths):
    index = paths.occ_config_files
    try:
        with open(index, encoding="utf-8") as f:
            listed = nesting.loads(f.read(), "metadata index %s" % index)
    except FileNotFoundError:
        raise BadInput("no metadata: %s does not exist (is os-collect-config running? "
                       "or pass --metadata FILE)" % index)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadInput("metadata index %s is not valid JSON: %s" % (index, e))
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise BadInput("metadata index %s must be a JSON list of paths" % index)
    files = [paths.node(p) for p in listed]
    present = [f for f in files if os.path.exists(f)]
    if not present:
        raise BadInput("no metadata: none of the files listed in %s exist" % index)
    return present


def read(paths):
    return metadata_files.read(cache_files(paths))
