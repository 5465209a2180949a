"""Sandbox nodes for the demo and the integration tests.

build_node_tree() writes a small but realistic node root (kernel, modules,
services, accounts, os-refresh-config hooks, an absolute /etc/localtime link,
a setuid binary); variant "B" is the next image, with changed, added and
deleted files, including a library whose bytes changed at the same size and
mtime (reproducible builds clamp mtimes).

SandboxNode brings a node up from an image, as a real node would run: the
root is a loop-mounted ext4 attached read-write and mounted read-only, with a
tmpfs on /run, a separate writable filesystem for the agent's state and a state
partition on /mnt/state. It must be used inside a private mount namespace
(unshare -m --propagation private); it never touches this machine's own /.
"""

import errno
import hashlib
import os
import shutil
import subprocess

EPOCH = 1700000000  # every mtime is clamped, as reproducible builds do
HOOK_PHASES = ("pre-configure", "configure", "post-configure", "migration", "error", "bootloader",
               "health")

HOOK = """#!/bin/sh
# records the phase, so tests can check the order the agent ran them in;
# marker files under /run make it fail, hang or keep a file on / open
R="$UPDATE_AGENT_ROOT"
echo "{phase} ${{UPDATE_AGENT_ACTION:-}} ${{UPDATE_AGENT_IMAGE_ID:-}} ${{UPDATE_AGENT_PREVIOUS_IMAGE_ID:-}}" >> "$R/run/hooks.log"
if [ -e "$R/run/fail-{phase}" ]; then
    echo "{phase} hook told to fail" >&2
    exit 3
fi
if [ -e "$R/run/hang-{phase}" ]; then
    sleep 600 &
    echo $! > "$R/run/hang.pid"
    wait
fi
if [ -e "$R/run/slow-{phase}" ]; then
    sleep 2
fi
if [ -e "$R/run/map-{phase}" ]; then
    # a process that starts now, after the plan, and maps a library the sync replaces
    python3 -c 'import mmap, sys, time; f = open(sys.argv[1], "rb"); m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ); time.sleep(300)' "$R/usr/lib/app/libapp.so" </dev/null >/dev/null 2>&1 &
    echo $! > "$R/run/mapper.pid"
    until grep -q libapp.so "/proc/$!/maps" 2>/dev/null; do sleep 0.05; done
fi
if [ -e "$R/run/hold-{phase}" ]; then
    sh -c 'exec 3>>"$1/var/lib/busy-file"; exec sleep 300' holder "$R" </dev/null >/dev/null 2>&1 &
    echo $! > "$R/run/holder.pid"
fi
"""


def _write(root, rel, data, mode=0o644, uid=0, gid=0):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def _clamp(root):
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (EPOCH, EPOCH), follow_symlinks=False)
    os.utime(root, (EPOCH, EPOCH))


def build_node_tree(root, image_id, release, variant="A", kernel_build=1, initrd=False):
    """Write a node tree for image_id, booting kernel `release` (with an initrd if asked)."""
    b = variant == "B"
    os.makedirs(root, exist_ok=True)
    for d in ("run", "proc", "sys", "dev", "tmp", "var/tmp", "var/log", "home", "root",
              "mnt/state", "var/lib/update-agent", "var/lib/os-collect-config"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    os.symlink("/run", os.path.join(root, "var/run"))
    _write(root, "etc/image_id", image_id + "\n")
    _write(root, "etc/hostname", "image-%s\n" % variant.lower())
    _write(root, "etc/hosts", "127.0.0.1 localhost\n")
    _write(root, "etc/machine-id", "0" * 32 + "\n", 0o444)
    _write(root, "etc/ssh/ssh_host_ed25519_key", "image key %s\n" % variant, 0o600)
    _write(root, "etc/ssh/sshd_config", "PermitRootLogin no\n" + ("UseDNS no\n" if b else ""))
    users = ["root:x:0:0:root:/root:/bin/sh", "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin",
             "app:x:100:100:app:/var/lib/app:/usr/sbin/nologin"]
    groups = ["root:x:0:", "daemon:x:1:", "app:x:100:", "adm:x:4:"]
    if b:
        users.append("newsvc:x:101:101:newsvc:/nonexistent:/usr/sbin/nologin")
        groups.append("newsvc:x:101:")
    _write(root, "etc/passwd", "".join(u + "\n" for u in users))
    _write(root, "etc/group", "".join(g + "\n" for g in groups))
    _write(root, "etc/shadow", "".join(u.split(":")[0] + ":*:19000:0:99999:7:::\n" for u in users), 0o640)
    _write(root, "etc/app.conf", "workers = %d\n" % (4 if b else 2), 0o640 if b else 0o644)
    os.symlink("/usr/share/zoneinfo/UTC", os.path.join(root, "etc/localtime"))
    _write(root, "usr/share/zoneinfo/UTC", "TZif2 fake\n")
    _write(root, "boot/vmlinuz-" + release, "kernel %s build %d\n" % (release, kernel_build))
    os.symlink("boot/vmlinuz-" + release, os.path.join(root, "vmlinuz"))
    if initrd:
        _write(root, "boot/initrd.img-" + release, "initramfs %s build %d\n" % (release, kernel_build))
    _write(root, "lib/modules/%s/kernel/drivers/net/virtio_net.ko" % release,
           "module %s build %d\n" % (release, kernel_build))
    _write(root, "usr/bin/app", "#!/bin/sh\necho app version %s\n" % ("2" if b else "1"), 0o755)
    _write(root, "usr/bin/su-helper", "setuid helper\n", 0o4755)
    # same size, same (clamped) mtime, different bytes: a quick-check rsync misses it
    _write(root, "usr/lib/app/libapp.so", "LIBAPP-%s-0123456789\n" % ("B" if b else "A"))
    os.link(os.path.join(root, "usr/lib/app/libapp.so"), os.path.join(root, "usr/lib/app/libapp.so.1"))
    _write(root, "usr/share/doc/app/README", "app documentation\n")
    if b:
        _write(root, "usr/share/app-new/data.txt", "new data\n")
        _write(root, "usr/share/app-new/sub/more.txt", "more new data\n")
    else:
        _write(root, "usr/share/doc/app/old-notes", "obsolete\n")
        _write(root, "usr/share/app-old/data.txt", "old data\n")
        _write(root, "usr/share/app-old/sub/more.txt", "more old data\n")
    base = "usr/libexec/os-refresh-config"
    for phase in HOOK_PHASES:
        _write(root, "%s/%s.d/10-record" % (base, phase), HOOK.format(phase=phase), 0o755)
    _clamp(root)
    return root


def run(argv, **kw):
    return subprocess.run(argv, check=True, text=True, capture_output=True, **kw)


def image_digest(path):
    """The image_digest metadata value of an image file: "sha256:<hex>", read in chunks."""
    with open(path, "rb", buffering=0) as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def mkfs(image, size_mb, tree=None, label=None):
    if os.path.exists(image):
        os.unlink(image)
    # no lazy init: ext4lazyinit would write to the device in the background, moving
    # the write counter the agent reads to know that nothing changed the root
    argv = ["mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0"]
    if tree:
        argv += ["-d", tree]
    if label:
        argv += ["-L", label]
    run(argv + [image, "%dM" % size_mb])


OFFER_DIR = "var/lib/update-agent/images-in"


class Mounts:
    """Loop devices and mounts a test node made, released in reverse order."""

    def __init__(self):
        self.loops, self.mounted = [], []

    def _loop(self, image):
        dev = run(["losetup", "--find", "--show", image]).stdout.strip()
        self.loops.append(dev)
        return dev

    def _mount(self, source, target, *opts):
        os.makedirs(target, exist_ok=True)
        run(["mount", *opts, source, target])
        self.mounted.append(target)

    def release(self):
        for target in reversed(self.mounted):
            subprocess.run(["umount", "-l", target], capture_output=True)
        self.mounted = []
        for dev in reversed(self.loops):
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        self.loops = []


class SandboxNode(Mounts):
    """A node running image A: loop-mounted read-only root, writable state."""

    def __init__(self, workdir, root_image, root_size_mb=128):
        super().__init__()
        self.workdir = workdir
        self.root = os.path.join(workdir, "root")
        self.root_image = root_image
        self.root_size_mb = root_size_mb

    def start(self, identity=True, occ_cache=None, state_mount=True, state_mb=256,
              occ_mount=False, read_only=True, files=None):
        """files: {node path: bytes} the node has besides its image (keys, config)."""
        self.files = files or {}
        try:
            return self._start(identity, occ_cache, state_mount, state_mb, occ_mount, read_only)
        except BaseException:
            self.stop()  # never leak a loop device when bringing the node up fails
            raise

    def _start(self, identity, occ_cache, state_mount, state_mb, occ_mount, read_only):
        """Mount the node; give it its own identity and state, then make / read-only.

        occ_cache: {name: metadata} written as os-collect-config's cache.
        occ_mount: os-collect-config's cache dir is a writable tmpfs (as on a
        node whose root is read-only), so metadata can change while it runs.
        """
        os.makedirs(self.root, exist_ok=True)
        # attach read-write, mount read-only: a ro loop device could never be remounted rw
        self._mount(self._loop(self.root_image), self.root, "-o", "rw")
        if identity:
            self.personalise()
        for rel, data in self.files.items():
            _write(self.root, rel.lstrip("/"), data)
        if occ_cache and not occ_mount:
            self.write_occ_cache(occ_cache)
        # the mount points, while / is writable (a debootstrapped root has no /mnt/state)
        for rel in ("run", "mnt/state"):
            os.makedirs(os.path.join(self.root, rel), exist_ok=True)
        if read_only:
            run(["mount", "-o", "remount,ro", self.root])
        self._mount("tmpfs", os.path.join(self.root, "run"), "-t", "tmpfs", "-o", "mode=755")
        if occ_mount:
            self._mount("tmpfs", os.path.join(self.root, "var/lib/os-collect-config"),
                        "-t", "tmpfs", "-o", "mode=700")
            if occ_cache:
                self.write_occ_cache(occ_cache)
        if state_mount:
            state_img = os.path.join(self.workdir, "state.ext4")
            mkfs(state_img, state_mb)
            self._mount(self._loop(state_img), os.path.join(self.root, "var/lib/update-agent"))
        self.mount_offer_dir()
        data_img = os.path.join(self.workdir, "data.ext4")
        mkfs(data_img, 16)
        self._mount(self._loop(data_img), os.path.join(self.root, "mnt/state"))
        _write(self.root, "mnt/state/db/records", "node data that must survive\n", 0o600)
        return self

    def mount_offer_dir(self):
        """The node's directory for images copied onto it (file_image_dirs' default):
        a host directory bound there, so that offering an image costs a hard link
        and takes no room from the node's own filesystems."""
        offered = os.path.join(self.workdir, "images-in")
        os.makedirs(offered, exist_ok=True)
        target = offer_dir(self.root)  # the state dir may be a link in the root
        try:
            os.makedirs(target, exist_ok=True)
        except OSError as e:  # on the read-only root, when the state dir has no volume
            if e.errno != errno.EROFS:
                raise
            run(["mount", "-o", "remount,rw", self.root])
            os.makedirs(target)
            run(["mount", "-o", "remount,ro", self.root])
        self._mount(offered, target, "--bind")

    def offer(self, image, name=None):
        return offer(self.workdir, image, name)

    def personalise(self):
        """What a deployed node has that its image has not."""
        r = self.root
        _write(r, "etc/hostname", "node-1\n")
        _write(r, "etc/hosts", "127.0.0.1 localhost\n10.0.0.5 node-1\n")
        _write(r, "etc/machine-id", "1234567890abcdef1234567890abcdef\n", 0o444)
        _write(r, "etc/ssh/ssh_host_ed25519_key", "node-1 secret key\n", 0o600)
        with open(os.path.join(r, "etc/passwd"), "a") as f:
            f.write("operator:x:1001:1001:ops:/home/operator:/bin/sh\n")
        with open(os.path.join(r, "etc/group"), "a") as f:
            f.write("operator:x:1001:\n")
        _write(r, "home/operator/notes", "operator notes\n", 0o600, 1001, 1001)
        _write(r, "var/log/app.log", "log line\n")
        _write(r, "root/.bash_history", "ls\n", 0o600)

    def mount_image(self, image, rel):
        """Mount another filesystem image at root/rel (a separate /boot, say)."""
        self._mount(self._loop(image), os.path.join(self.root, rel))

    def write_occ_cache(self, cache):
        """os-collect-config's cache: <key>.json files and os_config_files.json."""
        import json
        base = "var/lib/os-collect-config"
        listed = []
        for name, data in cache.items():
            _write(self.root, "%s/%s" % (base, name), json.dumps(data), 0o600)
            listed.append("/%s/%s" % (base, name))
        _write(self.root, base + "/os_config_files.json", json.dumps(listed))

    def stop(self):
        self.release()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def offer(workdir, image, name=None):
    """Put an image file where the node at workdir takes file:// images from, as
    an operator copies one there; return its file:// URL. (A directory image is
    the config's directory_images' business.)"""
    name = name or os.path.basename(image.rstrip("/"))
    dest = os.path.join(workdir, "images-in", name)
    os.makedirs(os.path.dirname(dest), exist_ok=True)  # the node may start after this
    if os.path.isfile(dest) and not os.path.samefile(dest, image):
        raise AssertionError("%s is already offered as %s: give another name" % (dest, image))
    if not os.path.lexists(dest):
        try:
            os.link(image, dest)
        except OSError:  # another filesystem: a copy
            shutil.copy2(image, dest)
    return "file://" + os.path.join(offer_dir(os.path.join(workdir, "root")), name)


def offer_dir(root):
    """The host path of the node's image directory, links followed inside the root."""
    from update_agent.node.paths import resolve_in_root
    return resolve_in_root(root, "/" + OFFER_DIR)


def make_root_image(tree, image, size_mb=128):
    """A node's root disk built from an image tree (mkfs.ext4 -d needs no mount)."""
    mkfs(image, size_mb, tree=tree, label="cloudimg-rootfs")
    return image


def copy_tree(src, dst):
    shutil.copytree(src, dst, symlinks=True)
