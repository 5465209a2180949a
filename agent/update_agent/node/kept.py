"""The node files a repository image's update keeps for a rollback without download.

Hard links on the root's own filesystem, under KEPT_DIR/<image digest>/<content
hex>: made by the pin step before the sync replaces or deletes their paths
(decide/rollback_keep.py says which), dropped when a later update commits. The
walk never enters KEPT_DIR (node/facts.py excludes it); a content taken from
here is checked against its name before use, like any other.
"""

import logging
import os
import shutil

from update_agent.node.facts import KEPT_DIR

LOG = logging.getLogger(__name__)


def _top(root):
    return os.path.join(root, KEPT_DIR.lstrip("/"))


def _name(digest):
    return digest.replace(":", "-")


def keep(root, digest, pairs):
    """Link each (hex, rel) of the node under the set of the image `digest` is
    replaced by; return how many links were made."""
    if not pairs:
        return 0
    where = os.path.join(_top(root), _name(digest))
    os.makedirs(where, mode=0o700, exist_ok=True)
    os.chmod(_top(root), 0o700)
    made = 0
    for hexdigest, rel in pairs:
        dst = os.path.join(where, hexdigest)
        if os.path.lexists(dst):
            continue
        try:
            os.link(os.path.join(root, rel), dst, follow_symlinks=False)
            made += 1
        except FileNotFoundError:
            continue  # gone since the plan: nothing to keep
    LOG.info("kept %d replaced files for a rollback without download", made)
    return made


def drop_all_but(root, digest):
    """After a commit to `digest`: only the files its own update kept are needed."""
    top = _top(root)
    try:
        names = os.listdir(top)
    except FileNotFoundError:
        return
    for name in names:
        if name != _name(digest):
            shutil.rmtree(os.path.join(top, name), ignore_errors=True)
            LOG.info("dropped the files kept for a rollback before %s", name)
    if not os.listdir(top):
        os.rmdir(top)


def files(root):
    """{content hex: host path} of every kept file."""
    out = {}
    top = _top(root)
    for name in sorted(os.listdir(top)) if os.path.isdir(top) else ():
        for hexdigest in os.listdir(os.path.join(top, name)):
            out.setdefault(hexdigest, os.path.join(top, name, hexdigest))
    return out
