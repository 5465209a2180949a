"""Add an image's tree to an object repository (docs/repository.md).

Only contents no record of the repository already locates are compressed and
written, so publishing image B after A costs hashing B and compressing its new
files. The image's record is written last: a client that finds it finds
everything it names.
"""

import collections
import hashlib
import logging
import os

from update_agent.decide import accounts, entries as entries_mod, repo_format as fmt
from update_agent.errors import BadInput
from update_agent.node import manifest
from update_agent.node.facts import read_image_id
from update_agent.repo import store, tarball

LOG = logging.getLogger(__name__)

Published = collections.namedtuple(
    "Published", "image_id manifest files objects packs new_objects new_packs written_bytes reused already")


def publish(tree, repo, image_id, system, signer=None):
    """Publish the tree at `tree` as image_id (None: the image's /etc/image_id);
    signer(digest_text) -> base64 signature."""
    return _publish(repo, image_id, system, signer, lambda scratch: _read_tree(tree))


def publish_tar(path, fmt, repo, image_id, system, signer=None):
    """Publish a tar archive read from its headers (no root needed: nothing is unpacked)."""
    return _publish(repo, image_id, system, signer,
                    lambda scratch: tarball.read(path, fmt, system, scratch))


def _publish(repo, image_id, system, signer, read):
    repo = store.open_repo(repo, create=True)
    with store.locked(repo), store.scratch(repo) as scratch:
        source = read(scratch)
        image_id = image_id or image_id_of(source)
        digest = entries_mod.digest_of(source.entries)
        done = _already(repo, image_id, digest)
        if done:
            return done
        known = known_locations(repo, system)
        return _write(source, repo, image_id, digest, known, system, signer, scratch)


def image_id_of(source):
    """The image's own /etc/image_id, when no id is given."""
    e = source.entries.get("etc/image_id")
    found = read_image_id(os.path.join(source.top, source.rel_of[e.digest])) \
        if e is not None and e.kind == "f" and e.size else ""
    if not found:
        raise BadInput("the image has no /etc/image_id: give --image-id")
    return found


def _read_tree(tree):
    entries, _ = manifest.build(tree, entries_mod.Excluder(()))
    values = {rel: manifest.xattr_values(os.path.join(tree, rel))
              for rel in sorted(entries) if entries[rel].xattrs}
    rel_of = {}
    for rel in sorted(entries):
        if entries[rel].kind == "f":
            rel_of.setdefault(entries[rel].digest, rel)
    return tarball.Read(entries, values, tree, rel_of)


def _already(repo, image_id, digest):
    retired = os.path.join(repo, fmt.retired_path(image_id))
    if os.path.exists(retired):
        # a node may still be fetching it: an id means one content until its grace is over
        with open(retired, encoding="utf-8") as f:
            old = fmt.record_loads(f.read(), retired)
        if old["manifest"] != digest:
            raise BadInput("image id %r was published in %s with another content (manifest %s) and "
                           "retired; until a prune drops it, give another --image-id"
                           % (image_id, repo, old["manifest"]))
    path = os.path.join(repo, fmt.record_path(image_id))
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        rec = fmt.record_loads(f.read(), path)
    if rec["manifest"] != digest:
        raise BadInput("image id %r is already published in %s with another content (manifest %s, "
                       "this tree is %s): give another --image-id" % (image_id, repo, rec["manifest"], digest))
    LOG.info("image %s is already in %s", image_id, repo)
    return Published(image_id, digest, rec.get("files", 0), 0, 0, 0, 0, 0, 0, True)


def known_locations(repo, system):
    """{hex: (path, offset, length)} of every content a record (kept or retired)
    locates, where that file is still on disk."""
    found = {}
    for rec in records(repo):
        index = os.path.join(repo, fmt.index_path(fmt.hex_of(rec["index"])))
        if not os.path.exists(index):
            continue
        for hexdigest, loc in fmt.index_loads(store.read_compressed_text(system, index)).items():
            if hexdigest not in found and os.path.exists(os.path.join(repo, loc[0])):
                found[hexdigest] = loc
    return found


def records(repo, where=("images", "retired")):
    for sub in where:
        directory = os.path.join(repo, sub)
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            continue
        for name in names:
            if name.endswith(".json"):
                path = os.path.join(directory, name)
                with open(path, encoding="utf-8") as f:
                    yield fmt.record_loads(f.read(), path)


def _write(source, repo, image_id, digest, known, system, signer, scratch):
    entries = source.entries
    contents = fmt.stored_files(entries)
    first_path = source.rel_of
    new = [h for h in contents if h not in known]
    store.compress_files(system, source.top, [first_path[h] for h in new], scratch)
    locations = {h: known[h] for h in contents if h in known}
    written = 0
    new_objects = new_packs = 0
    frames = {h: os.path.getsize(store.compressed_path(scratch, first_path[h])) for h in new}
    for h in new:
        if not fmt.is_small(frames[h]):
            src = store.compressed_path(scratch, first_path[h])
            length = frames[h]
            store.fsync(src)
            if store.place(src, repo, fmt.object_path(h)):
                new_objects += 1
                written += length
            locations[h] = (fmt.object_path(h), 0, length)
    small = [(h, frames[h]) for h in new if fmt.is_small(frames[h])]
    for members in fmt.plan_packs(small):
        path, offsets, length = _write_pack(repo, scratch, members, first_path)
        new_packs += 1
        written += length
        locations.update({h: (path,) + offsets[h] for h in members})
    meta, meta_bytes = _write_metadata(source, repo, locations, system, scratch)
    written += meta_bytes
    delta, delta_bytes = _write_delta(repo, image_id, entries, locations, system, scratch)
    written += delta_bytes
    rec = fmt.record(image_id, digest, meta["index"], meta["xattrs"], system.clock(), len(entries),
                     signer(digest) if signer else None, delta)
    store.write_new(repo, fmt.record_path(image_id), fmt.record_dumps(rec).encode())
    LOG.info("published %s to %s: %d contents, %d new objects, %d new packs, %d bytes written",
             image_id, repo, len(contents), new_objects, new_packs, written)
    return Published(image_id, digest, len(entries), len(contents), len({loc[0] for loc in locations.values()}),
                     new_objects, new_packs, written, len(contents) - len(new), False)


def _previous(repo, image_id):
    """The record of the image published last before this one (None: the first)."""
    recs = [r for r in records(repo, ("images",)) if r["image_id"] != image_id]
    return max(recs, key=lambda r: r["published_at"]) if recs else None


def _write_delta(repo, image_id, image_entries, locations, system, scratch):
    """((previous image id, delta index digest), bytes written), or (None, 0)."""
    prev = _previous(repo, image_id)
    if prev is None:
        return None, 0
    path = os.path.join(repo, fmt.manifest_path(fmt.hex_of(prev["manifest"])))
    entries, _ = entries_mod.loads(store.read_compressed_text(system, path))
    have = {e.digest for e in entries.values() if e.kind == "f"}
    # a node's account files are its own: the image's are fetched for the merge
    merged = [image_entries[r].digest for r in accounts.FILES
              if r in image_entries and image_entries[r].kind == "f"]
    data = fmt.index_dumps(fmt.delta_locations(locations, have, merged)).encode()
    hexdigest = hashlib.sha256(data).hexdigest()
    packed = store.compress_bytes(system, data, scratch)
    written = len(packed) if store.write_new(repo, fmt.index_path(hexdigest), packed) else 0
    return (prev["image_id"], fmt.PREFIX + hexdigest), written


def _write_pack(repo, scratch, members, first_path):
    """Concatenate the members' zstd frames into one pack; its name is its sha256."""
    tmp = os.path.join(scratch, ".pack")
    h, offsets, offset = hashlib.sha256(), {}, 0
    with open(tmp, "wb") as out:
        for member in members:
            with open(store.compressed_path(scratch, first_path[member]), "rb") as f:
                frame = f.read()
            out.write(frame)
            h.update(frame)
            offsets[member] = (offset, len(frame))
            offset += len(frame)
        out.flush()
        os.fsync(out.fileno())
    path = fmt.pack_path(h.hexdigest())
    store.place(tmp, repo, path)
    return path, offsets, offset


def _write_metadata(source, repo, locations, system, scratch):
    """The index, the xattr values and the manifest, each named by its sha256."""
    written, digests = 0, {}
    entries, values = source.entries, source.xattrs
    texts = {"index": (fmt.index_dumps(locations), fmt.index_path),
             "xattrs": (fmt.xattrs_dumps(values) if values else None, fmt.xattrs_path),
             "manifest": (entries_mod.dumps(entries), fmt.manifest_path)}
    for key, (text, path_of) in texts.items():
        if text is None:
            digests[key] = None
            continue
        data = text.encode("utf-8", "surrogateescape")
        hexdigest = hashlib.sha256(data).hexdigest()
        packed = store.compress_bytes(system, data, scratch)
        if store.write_new(repo, path_of(hexdigest), packed):
            written += len(packed)
        digests[key] = fmt.PREFIX + hexdigest
    return digests, written
