"""The object repository's layout: where each file lives, what it holds, and which
small files share a pack. Pure: publishing writes these files (repo/publish.py),
a client reads them back with the same functions. docs/repository.md is the spec.

Every file is immutable once written and named by what it holds, so any HTTP
server, object store or caching proxy serves the repository correctly. The one
exception is an image's record, images/<image-id>.json: written once, never
changed, and only ever removed (moved to retired/) by a prune.
"""

import base64
import json
import re

from update_agent.errors import BadInput

FORMAT_LINE = "update-agent repository v1"
INDEX_LINE = "# update-agent object index v1"
RECORD_FORMAT = 1
# a content whose zstd frame is below this many bytes goes into a pack: one of its own
# would cost a node a request for less than a MiB, and a node makes at most about one
# request per MiB. Frames, not contents, are what a request carries: Debian's files
# compress about 3:1, so a 2 MiB library is a 0.7 MiB request.
SMALL = 1024 * 1024
PACK_TARGET = 2 * 1024 * 1024  # bytes of frames a pack gathers before it is closed
HEX = re.compile(r"[0-9a-f]{64}")
PREFIX = "sha256:"

FORMAT_FILE = "format"
LOCK_FILE = "lock"
TMP_DIR = "tmp"


def hex_of(digest):
    """The hex of a "sha256:<hex>" digest, or of a bare hex (what entries carry)."""
    text = digest[len(PREFIX):] if digest.startswith(PREFIX) else digest
    if not HEX.fullmatch(text):
        raise ValueError("not a sha256 digest: %r" % digest[:80])
    return text


def object_path(hexdigest):
    """One big file's content, zstd-compressed: named by the sha256 of the content."""
    return "objects/%s/%s.zst" % (hexdigest[:2], hexdigest)


def pack_path(hexdigest):
    """Small files' zstd frames, one after the other: named by the sha256 of the pack."""
    return "packs/%s/%s.pack" % (hexdigest[:2], hexdigest)


def manifest_path(hexdigest):
    """The image's manifest (decide/entries.py's text), zstd: hex = sha256 of the text."""
    return "manifests/%s.zst" % hexdigest


def index_path(hexdigest):
    return "indexes/%s.zst" % hexdigest


def xattrs_path(hexdigest):
    return "xattrs/%s.zst" % hexdigest


def record_path(image_id):
    return "images/%s.json" % image_id


def retired_path(image_id):
    return "retired/%s.json" % image_id


def is_small(frame_bytes):
    """Whether a content whose zstd frame has this many bytes goes into a pack."""
    return 0 < frame_bytes < SMALL


def stored_files(entries):
    """{hex: size} of the contents a client fetches: regular files with bytes, each
    content once (hard links and copies share it); an empty file needs no object."""
    found = {}
    for rel in sorted(entries):
        e = entries[rel]
        if e.kind == "f" and e.size > 0 and e.digest not in found:
            found[e.digest] = e.size
    return found


def plan_packs(new_small, target=PACK_TARGET):
    """Group [(hex, frame bytes)] (in manifest order, so that one directory's files
    tend to share a pack) into packs of about target bytes: [[hex, ...], ...]."""
    packs, current, filled = [], [], 0
    for hexdigest, size in new_small:
        if current and filled + size > target:
            packs.append(current)
            current, filled = [], 0
        current.append(hexdigest)
        filled += size
    if current:
        packs.append(current)
    return packs


# --- the object index: where each content is, as (repository path, offset, length)

def index_dumps(locations):
    """locations: {hex: (path, offset, length)}; length counts compressed bytes."""
    lines = [INDEX_LINE]
    for hexdigest in sorted(locations):
        path, offset, length = locations[hexdigest]
        lines.append("%s\t%s\t%d\t%d" % (hexdigest, path, offset, length))
    return "\n".join(lines) + "\n"


def index_loads(text):
    lines = text.split("\n")
    if lines[0] != INDEX_LINE:
        raise ValueError("not an object index in format %r (first line %r)" % (INDEX_LINE, lines[0][:60]))
    locations = {}
    for number, line in enumerate(lines[1:], 2):
        if not line:
            continue
        f = line.split("\t")
        if len(f) != 4 or not HEX.fullmatch(f[0]) or not _is_content_path(f[1]):
            raise ValueError("index line %d: not <sha256> <path> <offset> <length>" % number)
        try:
            locations[f[0]] = (f[1], int(f[2]), int(f[3]))
        except ValueError:
            raise ValueError("index line %d: offset or length is not a number" % number)
    return locations


_CONTENT = re.compile(r"(objects/[0-9a-f]{2}/[0-9a-f]{64}\.zst|packs/[0-9a-f]{2}/[0-9a-f]{64}\.pack)")


def _is_content_path(path):
    return _CONTENT.fullmatch(path) is not None


# --- xattr values: the manifest holds only their hash (entries.py), a client needs them

def xattrs_dumps(values):
    """values: {rel: {name: bytes}} -> JSON text, values base64."""
    return json.dumps({rel: {n: base64.b64encode(v).decode() for n, v in sorted(attrs.items())}
                       for rel, attrs in sorted(values.items())}, sort_keys=True) + "\n"


def xattrs_loads(text):
    obj = json.loads(text)
    return {rel: {n: base64.b64decode(v) for n, v in attrs.items()} for rel, attrs in obj.items()}


# --- the image's record

def record(image_id, manifest, index, xattrs, published_at, files, signature=None, delta=None):
    """What images/<image-id>.json holds: the digests of the image's manifest,
    object index and xattr values ("sha256:<hex>"; xattrs None when there are none).

    delta: (image id, index digest) of the image published before and of an index
    that locates only the contents that image lacks: all a node on it must fetch,
    in a file the size of the change, not of the image."""
    rec = {"format": RECORD_FORMAT, "image_id": image_id, "manifest": manifest, "index": index,
           "xattrs": xattrs, "published_at": published_at, "files": files}
    if signature is not None:
        rec["signature"] = signature
    if delta is not None:
        rec["delta_from"], rec["delta_index"] = delta
    return rec


def delta_locations(locations, previous_digests, always=()):
    """The index lines of the contents an image holds that the previous one lacks, and
    of always (hexes): contents every node needs whatever its image, such as the
    image's account files, which the agent merges with the node's own."""
    always = set(always)
    return {h: loc for h, loc in locations.items() if h not in previous_digests or h in always}


def record_dumps(rec):
    return json.dumps(rec, indent=1, sort_keys=True) + "\n"


def record_loads(text, where):
    """A record read back; BadInput naming where it came from if it is not one."""
    try:
        rec = json.loads(text)
    except ValueError as e:
        raise BadInput("%s is not an image record (JSON): %s" % (where, e))
    if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT:
        raise BadInput("%s is not an image record in format %d" % (where, RECORD_FORMAT))
    for key in ("manifest", "index") + (("delta_index",) if "delta_index" in rec else ()):
        if not isinstance(rec.get(key), str) or not rec[key].startswith(PREFIX):
            raise BadInput("%s: key %r is not a sha256 digest: %r" % (where, key, rec.get(key)))
    return rec


def metadata_paths(rec):
    """The content-addressed metadata files a record names."""
    paths = [manifest_path(hex_of(rec["manifest"])), index_path(hex_of(rec["index"]))]
    if rec.get("delta_index"):
        paths.append(index_path(hex_of(rec["delta_index"])))
    if rec.get("xattrs"):
        paths.append(xattrs_path(hex_of(rec["xattrs"])))
    return paths
