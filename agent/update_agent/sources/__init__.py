"""Metadata sources: one module each, chosen through this small registry.

A source returns the merged metadata dict; desired.from_metadata validates it.
"""

from update_agent.sources import metadata_files, occ_cache

REGISTRY = {
    occ_cache.NAME: occ_cache,
    metadata_files.NAME: metadata_files,
}


def read_metadata(paths, metadata_files_given=()):
    """--metadata FILE... wins; otherwise the node's os-collect-config cache."""
    if metadata_files_given:
        return metadata_files.read(list(metadata_files_given))
    return occ_cache.read(paths)
