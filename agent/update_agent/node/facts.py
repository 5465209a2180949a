"""Read-only inspection of the node. Nothing here writes to the root."""

import dataclasses
import json
import logging
import os

from update_agent.decide import accounts, kernel, kexec
from update_agent.decide.image_id import validate_image_id
from update_agent.errors import BadInput
from update_agent.node import manifest, mounts
from update_agent.state import statefile

LOG = logging.getLogger(__name__)

# On the root filesystem: hard links that keep replaced inodes still in use alive,
# so that remount,ro is not refused (see apply.py's pin step).
PIN_DIR = "/.update-agent-pinned"
KEPT_DIR = "/.update-agent-kept"  # node/kept.py: replaced files kept for a rollback


@dataclasses.dataclass(frozen=True)
class Facts:
    root: str
    release: str                 # the running kernel: this machine's, whatever --root says
    root_is_mount_point: bool
    root_read_only: bool
    root_fstype: str
    state_dir: str
    state_on_root_fs: bool       # state dir shares the root's filesystem
    state_read_only: bool
    free_bytes: int
    mount_points: tuple          # root-relative mount points inside the root
    current_image_id: str        # "" when /etc/image_id is absent
    excluded: tuple              # what neither manifest covers: preserved, state, mounts
    root_errors: int = 0         # errors the root filesystem recorded (ext4)
    kexec: tuple = (False, "")   # (the running kernel can kexec, the node's kexec tool)
    # None where the filesystem does not count them (capacity.py skips the check)
    root_free_inodes: int = None
    state_fs: str = ""           # the mount point of the state dir's filesystem
    state_free_bytes: int = None
    state_free_inodes: int = None
    boot_image: str = ""         # the kernel file the boot loader booted ("" if unsaid)


def read_image_id(path):
    """The committed image id, "" if the file is absent. A corrupt file is an error."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(4096).strip()
    except FileNotFoundError:
        return ""
    except UnicodeDecodeError:
        raise BadInput("%s is not text: the node's committed image id is unreadable" % path)
    try:
        return validate_image_id(text)
    except BadInput:
        raise BadInput("%s holds an invalid image id %r: the node's committed image id is "
                       "unreadable" % (path, text[:80]))


def gather(paths, agent_config, mountinfo=None):
    """The node's facts; agent_config: the [agent] section (what the sync leaves alone)."""
    mountinfo = mountinfo if mountinfo is not None else mounts.read()
    root = paths.root
    root_mount = mounts.mount_of(mountinfo, root)
    state_probe = paths.state_dir
    while not os.path.exists(state_probe):
        state_probe = os.path.dirname(state_probe)
    state_mount = mounts.mount_of(mountinfo, state_probe)
    below = tuple(mounts.below(mountinfo, root))
    vfs = os.statvfs(root)
    state_vfs = os.statvfs(state_probe)
    # the state dir is excluded under its configured name and where it really lives
    # (it may be reached through a symlink into the root's own filesystem)
    state_real = os.path.realpath(paths.state_dir)
    state_rel = os.path.relpath(state_real, os.path.realpath(root))
    extra = ("/" + state_rel,) if not state_rel.startswith("..") and state_rel != "." else ()
    excluded = _exclusions(tuple(agent_config.preserved) + (agent_config.state_dir, PIN_DIR, KEPT_DIR) + extra,
                           below)
    return Facts(
        root=root,
        release=os.uname().release,
        root_is_mount_point=mounts.is_mount_point(mountinfo, root),
        root_read_only=bool(root_mount and root_mount.read_only),
        root_fstype=root_mount.fstype if root_mount else "",
        state_dir=paths.state_dir,
        state_on_root_fs=bool(state_mount and root_mount and state_mount.mount_point == root_mount.mount_point),
        state_read_only=bool(state_mount and state_mount.read_only),
        free_bytes=vfs.f_bavail * vfs.f_frsize,
        mount_points=below,
        current_image_id=read_image_id(paths.image_id_file),
        excluded=excluded,
        root_errors=fs_errors(root_mount),
        kexec=kexec_facts(paths),
        root_free_inodes=free_inodes(vfs),
        state_fs=state_mount.mount_point if state_mount else "",
        state_free_bytes=state_vfs.f_bavail * state_vfs.f_frsize,
        state_free_inodes=free_inodes(state_vfs),
        boot_image=boot_image(paths),
    )


def free_inodes(vfs):
    """The inodes the agent (root) may still make; None when the filesystem has no
    fixed inode table (btrfs, some FUSE) and reports none."""
    return vfs.f_ffree if vfs.f_files else None


def _exclusions(fixed, mount_points):
    # the mount points come last: with_current_mounts() swaps them
    return tuple(fixed) + tuple("/" + m for m in mount_points)


def with_current_mounts(facts, mountinfo):
    """facts, with the mounts below the root as they are now added to those seen
    first: a pre-configure hook may mount a volume under the root, and the sync
    must not write into it. One it unmounted stays excluded too: its contents
    come back with it."""
    now = [m for m in mounts.below(mountinfo, facts.root) if not _agents_own(facts, m)]
    below = tuple(sorted(set(facts.mount_points) | set(now)))
    if below == facts.mount_points:
        return facts
    LOG.warning("mounted under the root since the plan began: %s; left alone, as every mount is",
                ", ".join("/" + m for m in below if m not in facts.mount_points))
    fixed = facts.excluded[:len(facts.excluded) - len(facts.mount_points)]
    return dataclasses.replace(facts, mount_points=below, excluded=_exclusions(fixed, below))


def _agents_own(facts, rel):
    """A mount below the state dir is the agent's own (the staged image, opened in
    the work dir): excluded with the state dir already, and not news to report."""
    state = os.path.relpath(os.path.realpath(facts.state_dir), os.path.realpath(facts.root))
    return not state.startswith("..") and state != "." and rel.startswith(state + "/")


def _ext4_counter(path, name):
    """One of the kernel's counters for the ext4 filesystem holding path; None if
    unreadable. The device is found from path itself: mountinfo may call it /dev/root."""
    try:
        dev = os.stat(path).st_dev
        block = os.path.realpath("/sys/dev/block/%d:%d" % (os.major(dev), os.minor(dev)))
        with open("/sys/fs/ext4/%s/%s" % (os.path.basename(block), name), encoding="ascii") as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None


def fs_errors(mount):
    """How many errors the kernel says the filesystem recorded (ext4 only; else 0)."""
    if mount is None or mount.fstype != "ext4":
        return 0
    return _ext4_counter(mount.mount_point, "errors_count") or 0


def unwritten_token(mountinfo, root):
    """A value that stays the same only while nothing can have changed the root's
    walk: the root's filesystem is read-only (the superblock, not only this mount:
    a writable bind mount elsewhere would reach it), its device has not been
    written (ext4's write counter counts every write to the device, a remount
    included) and no mount came or went below it. None when that cannot be known."""
    root_mount = mounts.mount_of(mountinfo, root)
    if root_mount is None or root_mount.fstype != "ext4" or not root_mount.read_only \
            or "ro" not in root_mount.super_options:
        return None
    written = _ext4_counter(root, "lifetime_write_kbytes")
    if written is None:
        return None
    return (os.stat(root).st_dev, written, tuple(mounts.below(mountinfo, root)))


def node_manifest(facts, cache_path, token=None, like=None):
    """Walk the node's root (never across mounts), reusing cached hashes.

    Returns (entries, sigs, protected, cached): protected are the preserved paths
    and mount points that exist on the node, {rel: kind}, which the sync must leave
    standing, as they are;
    cached is True when the cache already holds exactly this manifest.
    token: unwritten_token() now. When it is the token saved with the cache
    (save_unwritten), the root provably has not changed since: the cache is the
    walk, and nothing is walked.
    like: the image's manifest, whose entries the node's equal ones become (memory).
    """
    old_entries, old_sigs = manifest.load(cache_path, like)  # once: a damaged cache warns once
    if token is not None and old_entries:
        protected = _unwritten_protected(cache_path, token, facts.excluded)
        if protected is not None:
            LOG.info("the root was not written since its manifest was recorded: no walk")
            return old_entries, old_sigs, protected, True
    excluder = manifest.Excluder(facts.excluded)
    cache = {rel: (sig, old_entries[rel].digest) for rel, sig in old_sigs.items()
             if rel in old_entries and old_entries[rel].kind == "f"}
    trusted_before = _mtime_ns(cache_path) - manifest.RACY_NS if cache else None
    skipped = {}
    entries, sigs = manifest.build(facts.root, excluder, cache=cache,
                                   trusted_before_ns=trusted_before, skipped=skipped)
    cached = sigs == old_sigs and entries == old_entries
    del old_entries, old_sigs, cache
    return (manifest.share(entries, like) if like else entries), sigs, skipped, cached


def _token_path(cache_path):
    return cache_path + ".unwritten"


def save_unwritten(cache_path, token, excluded, protected):
    """Beside a node manifest just walked under `token`: what makes it the walk
    while the token holds (None: forget any, the cache may be stale)."""
    path = _token_path(cache_path)
    if token is None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    data = {"token": _walk_key(token, excluded), "excluded": list(excluded),
            "protected": protected}
    statefile.write_atomic(path, json.dumps(data, sort_keys=True).encode(), mode=0o600)


def _walk_key(token, excluded):
    """The token without the mounts the walk never enters (an image the agent mounted in
    its state dir, under a new name every run)."""
    dev, written, below = token
    skip = manifest.Excluder(excluded)
    return repr((dev, written, tuple(m for m in below if not skip.covers(m))))


def _unwritten_protected(cache_path, token, excluded):
    """The protected paths saved with the cache when `token` is still the one saved
    beside it (the cache is then the walk); else None."""
    try:
        with open(_token_path(cache_path), encoding="utf-8") as f:
            saved = json.load(f)
        if saved["token"] != _walk_key(token, excluded) or saved["excluded"] != list(excluded):
            return None
        return dict(saved["protected"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _mtime_ns(path):
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0


def boot_image(paths):
    """The file name of the kernel this boot loaded, from the node's /proc/cmdline
    ("" when the boot loader did not say, or the file is not there to read)."""
    try:
        with open(paths.node("/proc/cmdline"), encoding="utf-8", errors="replace") as f:
            return kernel.boot_image(f.read(65536))
    except OSError:
        return ""


def running_vmlinuz(paths, release, in_copy=False):
    """Digest of the running build's vmlinuz, read directly: /boot may be its own
    partition, which the root's walk does not enter. "" if absent. That is
    /boot/vmlinuz-<release>, or its fallback copy when that holds the running build."""
    name = "vmlinuz-" + (kernel.fallback_release(release) if in_copy else release)
    path = paths.node("/boot/" + name)
    if not os.path.isfile(path):
        return ""
    return manifest.hash_file(path)


def account_files(node_root, image_root, excluded=(), base_dir=None):
    """{rel: (node_text, image_text, base_text)} for the account databases the
    image has, except those the node preserves. base_text is the file of the
    image the node runs, as kept at the last commit (None if not kept)."""
    out = {}
    excluder = manifest.Excluder(excluded)
    for rel in accounts.FILES:
        if excluder.covers(rel):
            continue
        image_path = os.path.join(image_root, rel)
        if not os.path.isfile(image_path) or os.path.islink(image_path):
            continue
        node_path = os.path.join(node_root, rel)
        node_text = ""
        if os.path.isfile(node_path) and not os.path.islink(node_path):
            with open(node_path, encoding="utf-8", errors="surrogateescape") as f:
                node_text = f.read()
        with open(image_path, encoding="utf-8", errors="surrogateescape") as f:
            image_text = f.read()
        base_text = _account_base(base_dir, rel) if base_dir else None
        out[rel] = (node_text, image_text, base_text)
    return out


def _account_base(base_dir, rel):
    """The kept copy of rel from the image the node runs; None if there is none or it
    cannot be read: with no base, the merge keeps every account the node has."""
    path = os.path.join(base_dir, rel.replace("/", "_"))
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        LOG.warning("%s: cannot be read (%s); ignored: the node's accounts are all kept",
                    path, e.strerror)
        return None


def save_account_base(image_root, base_dir):
    """Keep the committed image's account files: the base of the next merge."""
    os.makedirs(base_dir, exist_ok=True)
    for rel in accounts.FILES:
        src = os.path.join(image_root, rel)
        dst = os.path.join(base_dir, rel.replace("/", "_"))
        if os.path.isfile(src) and not os.path.islink(src):
            with open(src, "rb") as f:
                statefile.write_atomic(dst, f.read(), mode=0o600)
        elif os.path.exists(dst):
            os.unlink(dst)


def kexec_facts(paths):
    """(running kernel can kexec, the node's kexec binary or "")."""
    tool = next((paths.node("/" + rel) for rel in kexec.TOOL if os.access(paths.node("/" + rel), os.X_OK)), "")
    return os.path.exists(kexec.SYSFS), tool
