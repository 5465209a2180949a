"""Pure: what a repository image's update keeps of the node so that a rollback
needs no download.

Every node file the sync replaces or deletes is hard-linked, named by its
content, into a directory on the root's filesystem before the sync (the pin
step), and stays there until the next update commits. Linking costs nothing
until the sync replaces the path; from then on the old bytes stay allocated,
so the capacity check counts them. A rollback then stages the previous image's
contents from these links, as it would copy a moved file.
"""


def replaced(change_set, node_entries):
    """((hex, rel), ...): one node path for each content the sync takes away."""
    found = {}
    for rel in change_set.changed + change_set.deleted:
        e = node_entries.get(rel)
        if e is not None and e.kind == "f" and e.size > 0 and e.digest not in found:
            found[e.digest] = rel
    return tuple(sorted(found.items()))


def room(pairs, node_entries):
    """(bytes, files) the kept contents hold on the root once the sync replaced them."""
    return sum(node_entries[rel].size for _, rel in pairs), len(pairs)
