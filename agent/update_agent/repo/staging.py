"""The sparse staging tree of a repository image: only what the sync writes.

One tree per image (named by its manifest digest) holds the image's paths the
plan transfers, and their directories, each with the image's type, mode, owner,
xattrs and mtime: rsync applies it as it applies a whole opened image.

A content comes, first to last: from the content cache (verified before, kept
across restarts), from a node file holding the same bytes (a moved file), from
the repository. Every content is checked against its sha256 before it is cached,
and again when it is copied into the tree.
"""

import concurrent.futures
import errno
import hashlib
import logging
import os
import shutil
import stat

from update_agent.decide import changes, repo_fetch
from update_agent.errors import AgentError
from update_agent.node import manifest

LOG = logging.getLogger(__name__)

CHUNK = 1 << 20


class Staging:
    def __init__(self, system, tree, cache_dir, entries, xattr_values, index, repo=None,
                 parallel=4):
        """entries: the image's manifest; xattr_values: {rel: {name: bytes}};
        index: a repo.index.Index; repo: a repo.client.Repo (a callable giving one:
        opened only when something must be fetched)."""
        self.system, self.tree, self.cache_dir = system, tree, cache_dir
        self.entries, self.xattr_values, self.index = entries, xattr_values, index
        self.repo, self.parallel = repo, parallel

    # --- what to do ------------------------------------------------------
    def todo(self, rels):
        """The image paths of rels and their directories not yet in the tree, parents first."""
        wanted = set()
        for rel in rels:
            if rel in self.entries:
                wanted.add(rel)
                wanted.update(a for a in changes.ancestors(rel) if a in self.entries)
        return [rel for rel in sorted(wanted) if not self._staged(rel)]

    def room(self, rels):
        """Bytes staging rels takes in the state dir: each new content once in the
        cache, each file in the tree."""
        todo = [r for r in self.todo(rels) if self.entries[r].kind == "f"]
        contents = repo_fetch.wanted(todo, self.entries)
        return sum(s for h, s in contents.items() if not self._cached(h)) + \
            sum(self.entries[r].size for r in todo)

    def _dirs_above(self, rels):
        out = set()
        for rel in rels:
            for d in [rel] + changes.ancestors(rel):
                e = self.entries.get(d)
                if e is not None and e.kind == "d":
                    out.add(d)
        return out

    def fetch_plan(self, rels, node_files):
        """What staging rels would fetch; node_files: {hex: node host path}."""
        want = repo_fetch.wanted(self.todo(rels), self.entries)
        have = {h for h in want if h in node_files or self._cached(h)}
        return self._plan(want, have)

    def _plan(self, want, have):
        return repo_fetch.plan(want, have, self.index.locate(h for h in want if h not in have))

    # --- doing it --------------------------------------------------------
    def fill(self, rels, node_files):
        """Stage rels (and their directories); return the FetchPlan it carried out."""
        todo = self.todo(rels)
        want = repo_fetch.wanted(todo, self.entries)
        os.makedirs(self.cache_dir, mode=0o700, exist_ok=True)
        for h in want:
            if not self._cached(h) and h in node_files:
                self._copy_local(h, node_files[h])
        fetch = self._plan(want, {h for h in want if self._cached(h)})
        if fetch.missing:
            raise AgentError("the repository's index locates no content %s of the image: it "
                             "cannot be staged" % fetch.missing[0])
        self._download(fetch.requests)
        os.makedirs(self.tree, mode=0o755, exist_ok=True)
        for rel in todo:
            self._make(rel, self.entries[rel])
        # a directory's time, after everything made in it; those staged by an earlier fill
        # too (rsync gives the node the times of the directories above what it writes)
        for rel in sorted(self._dirs_above(todo), reverse=True):
            os.utime(os.path.join(self.tree, rel), ns=(self.entries[rel].mtime,) * 2,
                     follow_symlinks=False)
        if todo:
            # on disk before the sync reads it: a torn staged file must never reach the node
            self.system.run([self.system.which("sync"), "--file-system", self.tree])
            LOG.info("staged %d paths: %d contents fetched in %d requests (%d bytes), %d found "
                     "on the node or cached", len(todo), fetch.contents, len(fetch.requests),
                     fetch.bytes, fetch.local)
        return fetch

    def _staged(self, rel):
        """In the tree already, as the image has it: a file with its size (the tree is
        flushed after every fill, so a file there is whole)."""
        try:
            st = os.lstat(os.path.join(self.tree, rel))
        except FileNotFoundError:
            return False
        e = self.entries[rel]
        return manifest.KINDS.get(stat.S_IFMT(st.st_mode)) == e.kind and \
            (e.kind != "f" or st.st_size == e.size)

    def _cache_path(self, hexdigest):
        return os.path.join(self.cache_dir, hexdigest)

    def _cached(self, hexdigest):
        return os.path.exists(self._cache_path(hexdigest))

    def _copy_local(self, hexdigest, src):
        """A node file with the content: copied into the cache if it still has it."""
        tmp = self._cache_path(hexdigest) + ".tmp"
        try:
            with open(src, "rb") as f, open(tmp, "wb") as out:
                got = _copy_hashing(f, out)
        except OSError as e:
            LOG.debug("%s not copied from the node: %s", src, e)
            got = None
        if got == hexdigest:
            os.rename(tmp, self._cache_path(hexdigest))
        elif os.path.exists(tmp):
            os.unlink(tmp)  # changed since the walk: fetched instead

    def _keep(self, hexdigest, data):
        tmp = self._cache_path(hexdigest) + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, self._cache_path(hexdigest))

    def _download(self, requests):
        if not requests:
            return
        repo = self.repo() if callable(self.repo) else self.repo
        try:
            with concurrent.futures.ThreadPoolExecutor(self.parallel) as pool:
                for done in concurrent.futures.as_completed(
                        [pool.submit(self._one, repo, r) for r in requests]):
                    done.result()  # the first failure stops the fill
        finally:
            if callable(self.repo):
                repo.close()

    def _one(self, repo, request):
        if request.span is None:
            return self._object(repo, request)
        data = repo.get(request.path, request.span)
        first = request.span[0]
        frames = b"".join(data[m.offset - first:m.offset - first + m.length]
                          for m in request.members)
        out = repo.unzstd(frames, request.path)
        at = 0
        for m in request.members:
            content = out[at:at + m.size]
            at += m.size
            repo._check(content, m.hexdigest, request.path)
            self._keep(m.hexdigest, content)

    def _object(self, repo, request):
        """A big content: streamed to disk (resumed where a killed run left it, by
        Range), decompressed by file, checked, kept."""
        (m,) = request.members
        zst = self._cache_path(m.hexdigest) + ".zst.part"
        have = os.path.getsize(zst) if os.path.exists(zst) else 0
        if have > m.length:
            have = 0  # not a prefix of this object: from the start
        if have < m.length:
            with open(zst, "r+b" if have else "wb") as f:
                f.seek(have)
                f.truncate()
                span = (have, m.length - have) if have else None
                repo.get(request.path, span, into=f)
        tmp = self._cache_path(m.hexdigest) + ".tmp"
        try:
            self.system.run([self.system.which("zstd"), "-d", "-q", "-f", "-o", tmp, "--", zst])
        except AgentError as e:
            os.unlink(zst)  # whole but not zstd: never resumed
            raise AgentError("%s is not zstd data: %s" % (repo.pool.url(request.path), e))
        os.unlink(zst)
        got = _hash_file(tmp)
        if got != m.hexdigest:
            os.unlink(tmp)
            raise AgentError("%s does not hold what its name says: sha256 %s, expected %s; it "
                             "was not used" % (repo.pool.url(request.path), got, m.hexdigest))
        os.rename(tmp, self._cache_path(m.hexdigest))

    # --- the tree --------------------------------------------------------
    def _make(self, rel, e):
        path = os.path.join(self.tree, rel)
        is_dir = os.path.isdir(path) and not os.path.islink(path)
        if os.path.lexists(path) and not (is_dir and e.kind == "d"):  # another kind, or torn
            shutil.rmtree(path) if is_dir else os.unlink(path)
        if e.kind == "d":
            if not os.path.isdir(path):
                os.mkdir(path, 0o700)
            self._attrs(path, rel, e)
        elif e.kind == "f":
            self._file(path, rel, e)
        elif e.kind == "l":
            os.symlink(e.digest, path)
            self._attrs(path, rel, e)
        else:
            major, _, minor = e.digest.partition(",")
            dev = os.makedev(int(major), int(minor)) if e.kind in "cb" else 0
            kind = {"c": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO, "s": stat.S_IFSOCK}
            os.mknod(path, kind[e.kind] | 0o600, dev)
            self._attrs(path, rel, e)

    def _file(self, path, rel, e):
        first = e.link
        if first and first != rel and self._staged(first) and first in self.entries:
            os.link(os.path.join(self.tree, first), path)  # one hard-link group, as in the image
            return
        tmp = path + ".update-agent-tmp"
        with open(tmp, "wb") as out:
            if e.size:
                got = self._copy_cached(e.digest, out)
                if got != e.digest:
                    out.close()
                    os.unlink(tmp)
                    os.unlink(self._cache_path(e.digest))
                    raise AgentError("the cached content %s of /%s was damaged (sha256 %s); it "
                                     "was removed and is fetched again at the next attempt"
                                     % (e.digest, rel, got))
        self._attrs(tmp, rel, e)
        os.rename(tmp, path)

    def _copy_cached(self, hexdigest, out):
        with open(self._cache_path(hexdigest), "rb") as f:
            return _copy_hashing(f, out)

    def _attrs(self, path, rel, e):
        os.chown(path, e.uid, e.gid, follow_symlinks=False)
        if e.kind != "l":
            os.chmod(path, stat.S_IMODE(e.mode))  # after chown, which clears set-id bits
        for name, value in sorted((self.xattr_values.get(rel) or {}).items()):
            try:
                os.setxattr(path, name, value, follow_symlinks=False)
            except OSError as err:
                if err.errno not in (errno.ENOTSUP, errno.EPERM) or e.kind != "l":
                    raise AgentError("cannot give the staged /%s its xattr %s: %s"
                                     % (rel, name, err.strerror))
        os.utime(path, ns=(e.mtime, e.mtime), follow_symlinks=False)


def _copy_hashing(src, out):
    h = hashlib.sha256()
    for chunk in iter(lambda: src.read(CHUNK), b""):
        h.update(chunk)
        out.write(chunk)
    return h.hexdigest()


def _hash_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
