"""Metadata sources, one module each: os-collect-config's cache (occ_cache), files
given with --metadata (metadata_files) and a URL the daemon polls (metadata_url).

Each returns the merged metadata dict; desired.from_metadata validates it. The
choice between them is made in one place each (here for the commands, where
the daemon is wired for metadata_url), so no registry is kept.
"""

from update_agent.sources import metadata_files, occ_cache


def read_metadata(paths, metadata_files_given=()):
    """--metadata FILE... wins; otherwise the node's os-collect-config cache."""
    if metadata_files_given:
        return metadata_files.read(list(metadata_files_given))
    return occ_cache.read(paths)
