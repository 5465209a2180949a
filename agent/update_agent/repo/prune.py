"""Carry out a prune (decide/repo_prune.py decides it): retire all but the newest
images, and remove the files no record still in use names."""

import collections
import json
import logging
import os

from update_agent.decide import repo_format as fmt, repo_prune
from update_agent.repo import publish, store

LOG = logging.getLogger(__name__)

Pruned = collections.namedtuple("Pruned", "retired expired deleted freed_bytes")

CONTENT_DIRS = ("objects", "packs", "manifests", "indexes", "xattrs")


def prune(repo, keep, grace, system):
    repo = store.open_repo(repo, create=False)
    with store.locked(repo):
        now = system.clock()
        live = {r["image_id"]: r for r in publish.records(repo, ("images",))}
        retired = {r["image_id"]: r for r in publish.records(repo, ("retired",))}
        refs = {}
        for image_id, rec in list(retired.items()) + list(live.items()):  # both: published again
            refs[image_id] = refs.get(image_id, set()) | _refs(repo, rec, system)
        present = _present(repo)
        decision = repo_prune.decide({i: r["published_at"] for i, r in live.items()},
                                     {i: r["retired_at"] for i, r in retired.items()},
                                     refs, {p: m for p, (m, _) in present.items()}, keep, grace, now)
        for image_id in decision.retire:
            _retire(repo, live[image_id], now)
        for image_id in decision.expire:
            os.unlink(os.path.join(repo, fmt.retired_path(image_id)))
        freed = 0
        for path in decision.delete:
            os.unlink(os.path.join(repo, path))
            freed += present[path][1]
        LOG.info("pruned %s: retired %s, dropped %s, removed %d files (%d bytes)", repo,
                 decision.retire, decision.expire, len(decision.delete), freed)
        return Pruned(decision.retire, decision.expire, len(decision.delete), freed)


def _refs(repo, rec, system):
    """Every repository path a record names: its metadata and its contents' files."""
    paths = set(fmt.metadata_paths(rec))
    index = os.path.join(repo, fmt.index_path(fmt.hex_of(rec["index"])))
    if os.path.exists(index):
        paths |= {loc[0] for loc in fmt.index_loads(store.read_compressed_text(system, index)).values()}
    return paths


def _present(repo):
    """{path: (mtime, size)} of the repository's content and metadata files."""
    found = {}
    for sub in CONTENT_DIRS:
        for top, _dirs, files in os.walk(os.path.join(repo, sub)):
            for name in files:
                path = os.path.join(top, name)
                st = os.lstat(path)
                found[os.path.relpath(path, repo)] = (st.st_mtime, st.st_size)
    return found


def _retire(repo, rec, now):
    """Move the record to retired/, with when: the grace period counts from then."""
    old = os.path.join(repo, fmt.retired_path(rec["image_id"]))
    if os.path.exists(old):  # retired before and published again: the grace counts anew
        os.unlink(old)
    data = (json.dumps(dict(rec, retired_at=now), indent=1, sort_keys=True) + "\n").encode()
    store.write_new(repo, fmt.retired_path(rec["image_id"]), data)
    os.unlink(os.path.join(repo, fmt.record_path(rec["image_id"])))
