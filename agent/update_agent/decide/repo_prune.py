"""Which images a prune retires and which repository files it removes. Pure: repo/prune.py
reads the repository and carries the decision out.

A node may be fetching an image's objects when the image is retired, and a cache may
still serve its record. So retiring only moves the record to retired/ with the time;
the files only it referenced stay until that record has been retired for the grace
period. A file no record references at all (left by a publish that died) goes once
it is older than the grace period, so a publish under way never loses its files.
"""

import collections
import enum

Prune = collections.namedtuple("Prune", "retire expire delete")


class Why(enum.StrEnum):
    KEPT = "kept"          # one of the newest N images
    RETIRED = "retired"    # retired now, or less than the grace period ago
    EXPIRED = "expired"    # retired longer ago than the grace period: its record goes


def decide(live, retired, refs, present, keep, grace, now):
    """live: {image_id: published_at}; retired: {image_id: retired_at};
    refs: {image_id: set of repository paths its record names (metadata, objects, packs)};
    present: {path: mtime} of the content and metadata files in the repository.
    Returns Prune(retire=[ids], expire=[ids of retired records to drop], delete=[paths])."""
    newest = sorted(live, key=lambda i: (live[i], i), reverse=True)
    status = {i: Why.KEPT for i in newest[:keep]}
    status.update({i: Why.RETIRED for i in newest[keep:]})
    for image_id, when in retired.items():
        if image_id not in status:
            status[image_id] = Why.EXPIRED if when <= now - grace else Why.RETIRED
    protected = set()
    for image_id, why in status.items():
        if why is not Why.EXPIRED:
            protected |= refs.get(image_id, set())
    delete = sorted(p for p, mtime in present.items()
                    if p not in protected and mtime <= now - grace)
    return Prune(retire=sorted(newest[keep:]),
                 expire=sorted(i for i, why in status.items() if why is Why.EXPIRED),
                 delete=delete)
