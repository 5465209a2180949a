"""Helpers for integration tests: images built once, a fresh node per test."""

import contextlib
import json
import os
import stat
import subprocess
import sys

import sandbox

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASE = os.uname().release

# What the node keeps as its own, whatever the image says (a subset of the defaults).
PRESERVED_FILES = ("etc/hostname", "etc/hosts", "etc/machine-id", "etc/ssh/ssh_host_ed25519_key",
                   "home/operator/notes", "var/log/app.log", "root/.bash_history")
# Paths whose content legitimately differs from the image after an update.
NOT_FROM_IMAGE = ("etc/image_id", "etc/passwd", "etc/group", "etc/shadow", "etc/gshadow",
                  "etc/hostname", "etc/hosts", "etc/machine-id", "etc/ssh/ssh_host_ed25519_key",
                  "home", "root", "var/log", "run", "tmp", "var/tmp", "proc", "sys", "dev",
                  "var/lib/update-agent", "mnt/state", "lost+found", "var/lib/os-collect-config",
                  ".update-agent-pinned", ".update-agent-kept")


sha256 = sandbox.image_digest  # the image_digest value of an image file


def read(node, rel):
    """The bytes of a file of the node."""
    with open(os.path.join(node.root, rel), "rb") as f:
        return f.read()


def write_metadata(path, image_id, url=None, digest=None, **extra):
    opts = dict(extra)
    if url is not None:
        opts["image_url"] = url
    if digest is not None:
        opts["image_digest"] = digest
    data = {"image_id": image_id}
    if opts:
        data["update_agent"] = opts
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def agent(root, *args, metadata=None, config=None, env=None, own_group=False):
    """Run the real CLI in a child process; returns CompletedProcess. own_group: in a
    process group of its own, which a fault point's kill takes down whole."""
    argv = [sys.executable, "-m", "update_agent", "--root", root]
    if metadata:
        argv += ["--metadata", metadata]
    if config:
        argv += ["--config", config]
    env = dict(env or os.environ, PYTHONPATH=os.path.join(PROJECT, "agent"))
    return subprocess.run(argv + list(args), capture_output=True, text=True, env=env, timeout=300,
                          start_new_session=own_group)


def plan_json(root, metadata, *extra):
    r = agent(root, "--dry-run", "--json", *extra, metadata=metadata)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@contextlib.contextmanager
def writable(root):
    """The node's read-only root made writable for what the test changes on it."""
    subprocess.run(["mount", "-o", "remount,rw", root], check=True)
    try:
        yield
    finally:
        subprocess.run(["mount", "-o", "remount,ro", root], check=True)


def pre_configure_hook(node, name, body):
    """Add a pre-configure.d hook to the node's read-only root; R is the root."""
    with writable(node.root):
        path = os.path.join(node.root, "usr/libexec/os-refresh-config/pre-configure.d", name)
        with open(path, "w") as f:
            f.write("#!/bin/sh\nset -e\nR=\"$UPDATE_AGENT_ROOT\"\n" + body)
        os.chmod(path, 0o755)


def wrapped_tool(tmp, tool, before="", after=""):
    """The environment of a PATH directory whose `tool` runs `before`, the real tool
    and, if it succeeds, `after` (sh; R is the last argument, the root for rsync):
    what else happens on the node, or what the copy got wrong, made for real."""
    bin_dir = os.path.join(str(tmp), "bin")
    os.makedirs(bin_dir, exist_ok=True)
    real = subprocess.run(["sh", "-c", "command -v " + tool], capture_output=True, text=True,
                          check=True).stdout.strip()
    path = os.path.join(bin_dir, tool)
    with open(path, "w") as f:
        f.write('#!/bin/sh\nfor R; do :; done\nR="${R%%/}"\n%s\n%s "$@" || exit $?\n%s\n'
                % (before, real, after))
    os.chmod(path, 0o755)
    return dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ.get("PATH", "")))


# a service's volumes, mounted while it quiesces: where image B changes a library
# (usr/lib/app) and inside a directory it deletes (usr/share/app-old)
VOLUMES = ("usr/lib/app", "usr/share/app-old/sub")
MOUNT_VOLUMES = "".join('mount -t tmpfs volume "$R/%s"\necho data > "$R/%s/volume"\n' % (v, v)
                        for v in VOLUMES)


def assert_volumes_untouched(root):
    for v in VOLUMES:
        path = os.path.join(root, v)
        assert os.path.ismount(path), "the volume on /%s is gone" % v
        assert os.listdir(path) == ["volume"], "the sync wrote into or emptied /%s" % v


def unmount_volumes(root):
    for v in VOLUMES:
        subprocess.run(["umount", os.path.join(root, v)], capture_output=True)


def root_mount_options(root):
    out = subprocess.run(["findmnt", "-n", "-o", "OPTIONS", "--mountpoint", root],
                         capture_output=True, text=True, check=True).stdout.strip()
    return out.split(",")


def snapshot(root, skip=("run", "var/lib/update-agent", "mnt/state", "proc", "sys", "dev")):
    """{rel: (type, mode, uid, gid, content-or-target)} of a whole tree, for 'untouched' checks."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = [d for d in dirnames
                       if os.path.normpath(os.path.join(rel_dir, d)) not in skip]
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    body = f.read()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(p)
            else:
                body = None
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, body)
    return out


def excluded(rel):
    return any(rel == p or rel.startswith(p + "/") for p in NOT_FROM_IMAGE)


def assert_matches_image(root, image_tree):
    """The node's root equals the image, apart from the node's own paths."""
    node = {k: v for k, v in snapshot(root).items() if not excluded(k)}
    image = {k: v for k, v in snapshot(image_tree, skip=()).items() if not excluded(k)}
    missing = sorted(set(image) - set(node))
    extra = sorted(set(node) - set(image))
    differ = sorted(k for k in set(image) & set(node) if image[k] != node[k])
    assert (missing, extra, differ) == ([], [], []), "node differs from image"


def loop_devices():
    """{device: losetup's line} of every attached loop device."""
    out = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
                         capture_output=True, text=True).stdout
    return {line.split()[0]: line for line in out.splitlines() if line.strip()}


def loop_devices_under(directory):
    """{device: losetup's line} of the loop devices whose backing file lies below directory."""
    prefix = directory.rstrip("/") + "/"
    found = {}
    for dev, line in loop_devices().items():
        back = line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else ""
        if back.startswith(prefix):
            found[dev] = line
    return found


def loops_for(path):
    return subprocess.run(["losetup", "-j", path], capture_output=True, text=True).stdout.strip()


class World:
    """Trees and images built once per test session."""

    def __init__(self, base):
        self.base = base
        self.tree_a = sandbox.build_node_tree(os.path.join(base, "A"), "img-A", RELEASE, "A")
        self.tree_b = sandbox.build_node_tree(os.path.join(base, "B"), "img-B", RELEASE, "B")
        self.image_b = os.path.join(base, "B.ext4")
        sandbox.mkfs(self.image_b, 32, tree=self.tree_b)
        self._trees = {}

    def tree(self, name, **kw):
        """A variant image tree (built lazily): build_node_tree kwargs."""
        if name not in self._trees:
            self._trees[name] = sandbox.build_node_tree(os.path.join(self.base, name), **kw)
        return self._trees[name]

    def ext4(self, tree, name, size_mb=None):
        path = os.path.join(self.base, name + ".ext4")
        if not os.path.exists(path):
            import imagebuild
            sandbox.mkfs(path, size_mb or max(32, imagebuild.fs_bytes(tree) >> 20), tree=tree)
        return path

    def node(self, tmp, tree=None, **start):
        root_img = os.path.join(tmp, "root.ext4")
        sandbox.make_root_image(tree or self.tree_a, root_img)
        return sandbox.SandboxNode(os.path.join(tmp, "node"), root_img).start(**start)

    def metadata_for_b(self, tmp, **extra):
        return write_metadata(os.path.join(tmp, "meta.json"), "img-B",
                              offered(tmp, self.image_b), sha256(self.image_b), **extra)


def offered(tmp, image, name=None):
    """The file:// URL of an image offered to the node World.node(tmp) made: in the
    directory the agent takes file:// images from by default (file_image_dirs)."""
    return sandbox.offer(os.path.join(str(tmp), "node"), str(image), name)
