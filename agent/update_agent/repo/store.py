"""A repository directory on disk: immutable placement, zstd through the CLI, the lock.

A file is written to tmp/ and then hard-linked to its name: link() never replaces,
so an existing object is never rewritten, and a reader never sees half a file.
"""

import contextlib
import fcntl
import os
import shutil
import tempfile

from update_agent.decide import repo_format as fmt
from update_agent.errors import AgentError, BadInput, CommandFailed

ZSTD_LEVEL = "-3"


def open_repo(repo, create):
    """Check (or create) the repository's format file; return its absolute path."""
    repo = os.path.abspath(repo)
    marker = os.path.join(repo, fmt.FORMAT_FILE)
    if not os.path.exists(marker):
        if not create:
            raise BadInput("repository %s: no %s file, not an update-agent repository"
                           % (repo, fmt.FORMAT_FILE))
        if os.path.isdir(repo) and os.listdir(repo):
            raise BadInput("repository %s: not empty and not an update-agent repository "
                           "(no %s file)" % (repo, fmt.FORMAT_FILE))
        try:
            os.makedirs(os.path.join(repo, fmt.TMP_DIR), exist_ok=True)
        except OSError as e:
            raise BadInput("repository %s cannot be created: %s" % (repo, e.strerror))
        write_new(repo, fmt.FORMAT_FILE, (fmt.FORMAT_LINE + "\n").encode())
    with open(marker, encoding="utf-8", errors="replace") as f:
        line = f.readline().strip()
    if line != fmt.FORMAT_LINE:
        raise BadInput("repository %s: format %r, this agent writes %r" % (repo, line[:60], fmt.FORMAT_LINE))
    os.makedirs(os.path.join(repo, fmt.TMP_DIR), exist_ok=True)
    return repo


@contextlib.contextmanager
def locked(repo):
    """One publish or prune at a time: a prune must not remove what a publish reuses."""
    fd = os.open(os.path.join(repo, fmt.LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AgentError("repository %s: another publish or prune holds %s"
                             % (repo, os.path.join(repo, fmt.LOCK_FILE)))
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def scratch(repo):
    """A temporary directory on the repository's filesystem, removed afterwards."""
    path = tempfile.mkdtemp(prefix="publish-", dir=os.path.join(repo, fmt.TMP_DIR))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def place(tmp, repo, rel):
    """Give the finished file tmp its name rel; False if rel already existed (kept as is)."""
    final = os.path.join(repo, rel)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    os.chmod(tmp, 0o644)  # zstd copies the source's mode; an HTTP server must read it
    try:
        os.link(tmp, final)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def write_new(repo, rel, data):
    """Write bytes as the immutable file rel (if it is not there yet)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.join(repo, fmt.TMP_DIR))
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return place(tmp, repo, rel)


def fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def compress_files(system, top, rels, out_dir):
    """zstd each top/rel to out_dir/rel.zst: one zstd for all of them (a file list),
    and one each for the rare names a file list cannot hold (a newline in them)."""
    listed = [r for r in rels if "\n" not in r]
    odd = [r for r in rels if "\n" in r]
    try:
        if listed:
            list_file = os.path.join(out_dir, ".files")
            with open(list_file, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write("\n".join(listed) + "\n")
            system.run([system.which("zstd"), ZSTD_LEVEL, "-q", "-f", "--no-progress",
                        "--filelist", list_file, "--output-dir-mirror", os.path.join(out_dir, "z")],
                       cwd=top)
            os.unlink(list_file)
        for rel in odd:
            out = compressed_path(out_dir, rel)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            system.run([system.which("zstd"), ZSTD_LEVEL, "-q", "-f", "-o", out, "--",
                        os.path.join(top, rel)])
    except CommandFailed as e:
        raise AgentError("cannot compress the image's files: %s" % (e.stderr.strip().splitlines()
                                                                   or [str(e)])[-1])


def compressed_path(out_dir, rel):
    return os.path.join(out_dir, "z", rel + ".zst")


def compress_bytes(system, data, scratch_dir):
    """The zstd of bytes (for the metadata files), through a file in scratch_dir."""
    src = os.path.join(scratch_dir, ".meta")
    with open(src, "wb") as f:
        f.write(data)
    system.run([system.which("zstd"), ZSTD_LEVEL, "-q", "-f", "-o", src + ".zst", "--", src])
    with open(src + ".zst", "rb") as f:
        out = f.read()
    os.unlink(src)
    os.unlink(src + ".zst")
    return out


def read_compressed_text(system, path):
    """A zstd metadata file's text (a manifest's paths may be any bytes: surrogateescape)."""
    try:
        data = system.run([system.which("zstd"), "-d", "-q", "-c", "--", path], binary=True).stdout
        return data.decode("utf-8", "surrogateescape")
    except CommandFailed as e:
        raise AgentError("repository file %s cannot be read: %s" % (path, e.stderr.strip()[-200:]))
