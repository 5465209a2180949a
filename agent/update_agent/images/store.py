"""The image cache: fetch, verify, keep the current and previous image.

An image is used only after its digest is verified. Files are named by their
digest, so a cached image is immutable and its manifest can be cached with it.
"""

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import urllib.parse

from update_agent.errors import AgentError, BadInput
from update_agent.images import fetch as fetching, formats, repo_image, signature
from update_agent.node import manifest
from update_agent.state import statecheck, statefile

LOG = logging.getLogger(__name__)

RECORD_FIX = "ignored: the image is fetched again when it is needed"


@dataclasses.dataclass(frozen=True)
class StagedImage:
    image_id: str
    digest: str      # "sha256:<hex>"
    path: str        # the image file, or the directory of a directory image
    format: str


def _name(digest):
    return digest.replace(":", "-")


def room_shortfall(need_bytes, free_bytes, free_inodes, config, where, show=True):
    """Why an image of need_bytes cannot be staged in `where` (None if it fits).

    show: False for a local file, whose size the message must not tell.
    Pure: the numbers come from the caller's statvfs (free_inodes None: the
    filesystem has no fixed inode count, as btrfs). A few inodes are the
    image, its record and its manifest; the margins keep the node room to work."""
    want_bytes = need_bytes + config.stage_space_margin
    want_inodes = 4 + config.stage_inode_margin
    if free_bytes < want_bytes:
        if not show:  # a local file: its size stays untold
            return ("not enough room to stage the image in %s: %d bytes are free"
                    % (where, free_bytes))
        return ("not enough room to stage the image in %s: it needs %d bytes (%d for the "
                "image + stage_space_margin %d), %d are free"
                % (where, want_bytes, need_bytes, config.stage_space_margin, free_bytes))
    if free_inodes is not None and free_inodes < want_inodes:
        return ("not enough inodes to stage the image in %s: it needs %d (4 + "
                "stage_inode_margin %d), %d are free"
                % (where, want_inodes, config.stage_inode_margin, free_inodes))
    return None


class ImageStore:
    def __init__(self, images_dir, config, system, opener=None, progress=None, keys_dir="",
                 node=None):
        self.dir = images_dir
        self.node = node or (lambda path: path)  # node path -> host path (under --root)
        self.keys_dir = keys_dir
        self.config = config
        self.system = system
        self.opener = opener
        self.progress = progress
        # (digest, entries) of the directory image just staged, or of the repository image
        # last read: its planner, staging and rollback keep share one copy (150,000 entries
        # are tens of MB each)
        self._cached_manifest = None
        self.repos = repo_image.RepoImages(images_dir, config, system, keys_dir)

    # --- staging ---------------------------------------------------------
    def stage(self, desired):
        """Return a verified StagedImage for desired, fetching it if needed."""
        self._check_signature(desired)
        staged = self._stage(desired)
        return staged

    def _check_signature(self, desired):
        # before any download: the signature vouches for the digest, the digest for the file
        if desired.image_signature:
            if not desired.image_digest:
                raise BadInput("image %s is signed but has no image_digest to check the "
                               "signature against" % desired.image_id)
            signature.verify(desired.image_digest, signature.decode(desired.image_signature),
                             self.keys_dir, desired.image_id)
        elif self.config.require_signature:
            raise BadInput("image %s has no update_agent.image_signature and the config "
                           "requires one (require_signature = true)" % desired.image_id)

    def _stage(self, desired):
        if not desired.image_digest and self.config.require_digest:
            raise BadInput("image %s has no update_agent.image_digest and the config "
                           "requires one (require_digest = true)" % desired.image_id)
        if desired.repo:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            digest, tree = self.repos.stage(desired, _name)
            return StagedImage(desired.image_id, digest, tree, repo_image.FORMAT)
        url = urllib.parse.urlsplit(desired.image_url)
        if url.scheme == "file" and os.path.isdir(urllib.parse.unquote(url.path)):
            return self._stage_directory(desired, urllib.parse.unquote(url.path))
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        if desired.image_digest:
            staged = self.lookup(desired.image_digest)
            if staged:
                LOG.info("image %s already staged as %s", desired.image_id, staged.path)
                return dataclasses.replace(staged, image_id=desired.image_id)
            part = os.path.join(self.dir, _name(desired.image_digest) + ".part")
            expected = fetching.Digest.parse(desired.image_digest)
        else:
            for staged in self._all():
                if staged.image_id == desired.image_id:
                    LOG.warning("image %s has no digest; reusing the cached copy %s",
                                desired.image_id, staged.path)
                    return staged
            key = hashlib.sha256(desired.image_url.encode()).hexdigest()[:16]
            part = os.path.join(self.dir, "url-%s.part" % key)
            expected = None
        LOG.info("fetching image %s from %s", desired.image_id, desired.image_url)
        c = self.config
        pace = fetching.Pace(c.download_timeout, c.download_min_rate, c.download_rate_window,
                             self.system.monotonic)
        got = fetching.fetch(desired.image_url, part, max_bytes=c.max_image_size,
                             digest=expected, opener=self.opener, progress=self.progress,
                             cafile=c.ca_file or None, pace=pace, room=self._check_room,
                             file_dirs=self._file_dirs())
        digest = str(got)
        path = os.path.join(self.dir, _name(digest) + ".img")
        try:
            fmt = formats.detect(part)
        except AgentError:
            os.unlink(part)  # verified, but not an image we can open: do not keep it
            raise
        os.rename(part, path)
        staged = StagedImage(desired.image_id, digest, path, fmt)
        self._write_meta(staged, desired.image_url)
        return staged

    def _file_dirs(self):
        """Host directories a file:// image may come from.

        The cache itself is always among them: a rollback stages from it."""
        return [self.node(d) for d in self.config.file_image_dirs] + [self.dir]

    def check_room(self, need_bytes):
        """AgentError unless the image cache has room for need_bytes (and its margins)."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self._check_room(need_bytes)

    def _check_room(self, need_bytes, show=True):
        try:
            st = os.statvfs(self.dir)
        except OSError as e:
            raise AgentError("cannot check the free space of %s: %s" % (self.dir, e.strerror))
        inodes = st.f_favail if st.f_files else None
        why = room_shortfall(need_bytes, st.f_bavail * st.f_frsize, inodes, self.config, self.dir,
                             show)
        if why:
            raise AgentError(why)

    def _stage_directory(self, desired, path):
        real = os.path.realpath(path)
        allowed = [os.path.realpath(d) for d in self.config.directory_images]
        if not any(real == d or real.startswith(d.rstrip("/") + "/") for d in allowed):
            raise BadInput("image URL %s names a directory; directory images are allowed only "
                           "under the config's directory_images (%s)"
                           % (desired.image_url, ", ".join(allowed) or "none set"))
        # A directory has no file digest: its digest is its manifest's.
        entries, _ = manifest.build(path, manifest.Excluder(()), skip_devices=False)
        digest = manifest.digest_of(entries)
        if desired.image_digest and desired.image_digest != digest:
            raise AgentError("image digest mismatch for directory %s: expected %s, got %s"
                             % (path, desired.image_digest, digest))
        self._cached_manifest = (digest, entries)
        return StagedImage(desired.image_id, digest, os.path.abspath(path), "directory")

    def _write_meta(self, staged, url):
        meta = {"image_id": staged.image_id, "digest": staged.digest, "format": staged.format,
                "url": url}
        statefile.write_atomic(os.path.join(self.dir, _name(staged.digest) + ".json"),
                               json.dumps(meta, sort_keys=True).encode(), mode=0o600)

    def _all(self):
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        out = []
        for name in sorted(names):
            if name.endswith(".json"):
                staged = self._record(name)
                if staged is not None and os.path.exists(staged.path):
                    out.append(staged)
        return out

    def _record(self, name):
        """The StagedImage an image record names; None (with a warning) if it is damaged:
        the record is a cache, and the image is fetched again."""
        path = os.path.join(self.dir, name)
        try:
            meta = statecheck.load(path, statecheck.IMAGE_RECORD, RECORD_FIX)
            if _name(meta["digest"]) + ".json" != name:  # never a path to anywhere else
                raise statecheck.DamagedState(path, "digest", "%r does not match the file's name"
                                              % meta["digest"][:80], RECORD_FIX)
        except statecheck.DamagedState as e:
            LOG.warning("%s", e)
            return None
        ext = ".tree" if meta["format"] == repo_image.FORMAT else ".img"
        return StagedImage(meta["image_id"], meta["digest"],
                           os.path.join(self.dir, _name(meta["digest"]) + ext), meta["format"])

    def source_url(self, staged):
        """Where a cached image came from (its URL; a repository image's repository)."""
        return statecheck.load(os.path.join(self.dir, _name(staged.digest) + ".json"),
                               statecheck.IMAGE_RECORD, RECORD_FIX).get("url", "")

    def staging(self, staged):
        """The Staging that fills a repository image's sparse tree."""
        meta = statecheck.load(os.path.join(self.dir, _name(staged.digest) + ".json"),
                               statecheck.IMAGE_RECORD, RECORD_FIX)
        return self.repos.staging(_name(staged.digest), self.manifest(staged, None), meta["url"])

    def lookup(self, digest):
        for staged in self._all():
            if staged.digest == digest:
                return staged
        return None

    # --- manifests -------------------------------------------------------
    def manifest(self, staged, tree):
        """The image's full manifest (tree: the opened image), cached by digest."""
        if self._cached_manifest and self._cached_manifest[0] == staged.digest:
            return self._cached_manifest[1]
        if staged.format == repo_image.FORMAT:
            entries = self.cached_manifest(staged.digest)
            self._cached_manifest = (staged.digest, entries) if entries else None
            return entries
        if staged.format == "directory":
            entries, _ = manifest.build(tree, manifest.Excluder(()), skip_devices=False)
            return entries
        cache = os.path.join(self.dir, _name(staged.digest) + ".manifest")
        entries, _ = manifest.load(cache)
        if entries:
            return entries
        LOG.info("computing the manifest of image %s", staged.image_id)
        entries, _ = manifest.build(tree, manifest.Excluder(()), skip_devices=False)
        manifest.save(cache, entries)
        return entries

    def cached_manifest(self, digest):
        """The cached manifest of an image by digest ({} if there is none)."""
        entries, _ = manifest.load(os.path.join(self.dir, _name(digest) + ".manifest")) if digest else ({}, {})
        return entries

    def intact(self, staged):
        """Does the cached file still have its digest? (Reads the whole image.)"""
        algorithm, _, expected = staged.digest.partition(":")
        h = hashlib.new(algorithm)
        try:
            with open(staged.path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except OSError:
            return False
        return h.hexdigest() == expected

    def evict(self, staged):
        """Forget a cached image that turned out unusable (its files are removed)."""
        stem = os.path.join(self.dir, _name(staged.digest))
        shutil.rmtree(stem + ".tree", ignore_errors=True)
        for ext in (".img", ".json", ".manifest", ".index", ".xattrs", ".record", ".delta"):
            try:
                os.unlink(stem + ext)
            except FileNotFoundError:
                pass
        LOG.warning("removed cached image %s (%s): it will be fetched again",
                    staged.image_id, staged.digest)

    def staged_bytes(self):
        return sum(os.path.getsize(s.path) for s in self._all())

    def staged(self):
        return self._all()

    # --- retention -------------------------------------------------------
    def retain(self, keep_digests):
        """Remove every cached image but the ones named (current and previous)."""
        keep = {_name(d) for d in keep_digests if d}
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        removed = []
        for name in names:
            stem, _, ext = name.rpartition(".")
            if ext in ("img", "part") + repo_image.EXTENSIONS and ext != "tree" and stem not in keep:
                os.unlink(os.path.join(self.dir, name))
                removed.append(name)
            elif ext == "tree" and stem not in keep:
                shutil.rmtree(os.path.join(self.dir, name))
                removed.append(name)
        # the contents fetched for the image now applied: on the node since
        shutil.rmtree(os.path.join(self.dir, repo_image.OBJECTS), ignore_errors=True)
        if removed:
            LOG.info("image cache: removed %s", ", ".join(sorted(removed)))
        return removed
