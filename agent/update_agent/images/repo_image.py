"""Images from an object repository: the manifest first, then only what the node lacks.

stage() fetches the image's record, manifest, index and xattr values, checks
each against its digest (and the manifest digest's signature), and keeps them
in the image cache beside an empty sparse tree; staging() then gives what fills
that tree with the plan's paths (repo/staging.py). Nothing here trusts the
server: every file is checked against a digest the metadata or the signed
record vouches for.
"""

import json
import logging
import os

from update_agent.decide import entries as entries_mod, repo_format
from update_agent.errors import AgentError, BadInput
from update_agent.images import signature
from update_agent.node import manifest
from update_agent.repo import client, index as index_mod, staging
from update_agent.state import statefile

LOG = logging.getLogger(__name__)

FORMAT = "repo"
# what the image cache keeps of a repository image, beside its .json
EXTENSIONS = ("tree", "manifest", "record", "delta", "index", "xattrs", "json")
OBJECTS = "objects"  # the content cache: verified contents, kept until an update succeeds


class RepoImages:
    def __init__(self, images_dir, config, system, keys_dir):
        self.dir, self.config, self.system, self.keys_dir = images_dir, config, system, keys_dir

    def paths(self, name):
        stem = os.path.join(self.dir, name)
        return {ext: stem + "." + ext for ext in EXTENSIONS}

    def staged(self, name):
        """Is everything stage() writes there for the image of this cache name?"""
        p = self.paths(name)
        return all(os.path.exists(p[k]) for k in ("tree", "manifest", "record", "xattrs")) and \
            (os.path.exists(p["delta"]) or os.path.exists(p["index"]))

    def repo(self, base_url):
        c = self.config
        pace = client.Pace(c.download_timeout, c.download_min_rate, c.download_rate_window,
                           self.system.monotonic)
        return client.Repo(self.system, base_url, pace, proxy=c.http_proxy, cafile=c.ca_file,
                           max_bytes=c.max_image_size)

    def stage(self, desired, name_of):
        """Fetch and check the image's metadata; return (digest, tree path)."""
        if desired.image_digest and self.staged(name_of(desired.image_digest)):
            return desired.image_digest, self.paths(name_of(desired.image_digest))["tree"]
        repo = self.repo(desired.repo)
        try:
            rec = repo.record(desired.image_id)
            digest = self._digest(desired, rec)
            name = name_of(digest)
            if self.staged(name):
                return digest, self.paths(name)["tree"]
            text = repo.text(repo_format.manifest_path(repo_format.hex_of(digest)), digest)
            # the delta index when there is one: the full one only if it falls short
            which = "delta_index" if rec.get("delta_index") else "index"
            index = repo.text(repo_format.index_path(repo_format.hex_of(rec[which])), rec[which])
            xattrs = repo.text(repo_format.xattrs_path(repo_format.hex_of(rec["xattrs"])),
                               rec["xattrs"]) if rec.get("xattrs") else "{}\n"
        finally:
            repo.close()
        self._keep(desired, name, digest, text, rec, (which, index), xattrs)
        LOG.info("image %s: manifest %s from %s (%d requests)", desired.image_id, digest,
                 desired.repo, repo.requests)
        return digest, self.paths(name)["tree"]

    def _digest(self, desired, rec):
        """The manifest digest: the metadata's, which the record must agree with, or the
        record's; its signature checked as the config and the node's keys ask."""
        digest = desired.image_digest or rec["manifest"]
        if digest != rec["manifest"]:
            raise AgentError("image %s: the metadata names manifest %s, the repository's record "
                             "%s" % (desired.image_id, digest, rec["manifest"]))
        if desired.image_signature:
            return digest  # ImageStore checked it over image_digest already
        signed = rec.get("signature")
        if signed:
            signature.verify(digest, signature.decode(signed, "the record's signature"),
                             self.keys_dir, desired.image_id)
        elif self.config.require_signature or signature.load_keys(self.keys_dir):
            raise BadInput("image %s from %s is not signed, and this node %s" % (
                desired.image_id, desired.repo,
                "requires a signature (require_signature = true)" if self.config.require_signature
                else "trusts signature keys (in %s): a repository image must then be signed"
                % self.keys_dir))
        return digest

    def _keep(self, desired, name, digest, text, rec, index, xattrs):
        which, index = index
        try:
            entries, _ = entries_mod.loads(text)
            repo_format.index_loads(index)
            values = repo_format.xattrs_loads(xattrs)
        except ValueError as e:
            raise BadInput("image %s from %s: %s" % (desired.image_id, desired.repo, e))
        for rel, attrs in values.items():
            e = entries.get(rel)
            if e is None or e.xattrs != manifest.xattrs_hash(attrs):
                raise AgentError("image %s from %s: the xattr values of /%s do not match its "
                                 "manifest" % (desired.image_id, desired.repo, entries_mod.show(rel)))
        del entries  # the checked text is the cache: 150,000 entries need not be held to write it
        p = self.paths(name)
        statefile.write_atomic(p["record"], repo_format.record_dumps(rec).encode(), mode=0o600)
        statefile.write_atomic(p["delta" if which == "delta_index" else "index"], index.encode(),
                               mode=0o600)
        statefile.write_atomic(p["xattrs"], xattrs.encode(), mode=0o600)
        statefile.write_atomic(p["manifest"], text.encode("utf-8", "surrogateescape"), mode=0o600)
        os.makedirs(p["tree"], mode=0o755, exist_ok=True)
        meta = {"image_id": desired.image_id, "digest": digest, "format": FORMAT,
                "url": desired.repo}
        statefile.write_atomic(p["json"], json.dumps(meta, sort_keys=True).encode(), mode=0o600)

    def staging(self, name, entries, base_url):
        """The Staging that fills the image's tree (its repository opened when needed)."""
        p = self.paths(name)
        try:
            rec = repo_format.record_loads(_read(p["record"]), p["record"])
            values = repo_format.xattrs_loads(_read(p["xattrs"]))
            delta, full = (repo_format.index_loads(_read(p[k])) if os.path.exists(p[k]) else None
                           for k in ("delta", "index"))
        except (OSError, ValueError) as e:
            raise AgentError("the cached metadata of image %s is unreadable (%s): remove %s and "
                             "retry" % (name, e, p["json"]))

        def fetch_full():
            repo = self.repo(base_url)
            try:
                text = repo.text(repo_format.index_path(repo_format.hex_of(rec["index"])),
                                 rec["index"])
            finally:
                repo.close()
            try:
                locations = repo_format.index_loads(text)
            except ValueError as e:
                raise BadInput("image %s from %s: %s" % (rec["image_id"], base_url, e))
            statefile.write_atomic(p["index"], text.encode(), mode=0o600)
            return locations
        return staging.Staging(self.system, p["tree"], os.path.join(self.dir, OBJECTS), entries,
                               values, index_mod.Index(delta, full, fetch_full),
                               repo=lambda: self.repo(base_url),
                               parallel=self.config.fetch_parallel)


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()
