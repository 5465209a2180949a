"""Every location on the node, derived from one injected root.

Production uses root "/"; tests and the demo pass a sandbox root. A node path
is resolved *inside* the root, symlinks included: an absolute link such as
var/run -> /run leads to <root>/run, never to this machine's own /run.
"""

import os
import posixpath

MAX_SYMLINKS = 40

DEFAULT_STATE_DIR = "/var/lib/update-agent"
CONFIG_FILE = "/etc/update-agent/update-agent.conf"
KEYS_DIR = "/etc/update-agent/keys"


def resolve_in_root(root, node_path):
    """Map the node-absolute path to a host path, following links inside root.

    Components that do not exist yet are appended as they are. '..' never
    climbs above the root (as in a chroot).
    """
    root = os.path.abspath(root)
    pending = [c for c in node_path.split("/") if c not in ("", ".")]
    parts = []  # resolved components below root
    links = 0
    while pending:
        comp = pending.pop(0)
        if comp == "..":
            if parts:
                parts.pop()
            continue
        candidate = os.path.join(root, *parts, comp)
        if os.path.islink(candidate):
            links += 1
            if links > MAX_SYMLINKS:
                raise OSError("too many symlinks resolving %s under %s" % (node_path, root))
            target = os.readlink(candidate)
            if target.startswith("/"):
                parts = []
            pending = [c for c in target.split("/") if c not in ("", ".")] + pending
            continue
        parts.append(comp)
    return os.path.join(root, *parts)


class NodePaths:
    """Named node locations under one root."""

    def __init__(self, root="/", state_dir=DEFAULT_STATE_DIR, orc_base=None):
        self.root = os.path.abspath(root)
        self.state_dir_node = state_dir
        self.orc_base_node = orc_base or os.environ.get(
            "OS_REFRESH_CONFIG_BASE_DIR", "/usr/libexec/os-refresh-config")

    @property
    def is_host_root(self):
        return self.root == "/"

    def node(self, node_path):
        return resolve_in_root(self.root, node_path)

    def rel(self, node_path):
        """Root-relative form of a node path, as rsync and manifests use it."""
        return posixpath.normpath(node_path).lstrip("/")

    # state (must be on a writable filesystem)
    @property
    def state_dir(self):
        return self.node(self.state_dir_node)

    @property
    def images_dir(self):
        return os.path.join(self.state_dir, "images")

    @property
    def node_manifest(self):
        return os.path.join(self.state_dir, "node-manifest.tsv")

    @property
    def accounts_base(self):
        return os.path.join(self.state_dir, "accounts")

    @property
    def work_dir(self):
        return os.path.join(self.state_dir, "work")

    # runtime
    @property
    def run_dir(self):
        return self.node("/run/update-agent")

    @property
    def agent_lock(self):
        return os.path.join(self.run_dir, "lock")

    @property
    def orc_lock(self):
        return self.node("/var/run/os-refresh-config.lock")

    # node content the agent reads or commits
    @property
    def image_id_file(self):
        return self.node("/etc/image_id")

    # the kernel's view, through the node's /proc as for /proc/cmdline (a sandbox
    # root's own, or none)
    @property
    def boot_id_file(self):
        return self.node("/proc/sys/kernel/random/boot_id")

    @property
    def config_file(self):
        return self.node(CONFIG_FILE)

    @property
    def occ_cache_dir(self):
        return self.node("/var/lib/os-collect-config")

    @property
    def occ_config_files(self):
        return os.path.join(self.occ_cache_dir, "os_config_files.json")

    def orc_phase_dir(self, phase):
        return self.node(posixpath.join(self.orc_base_node, phase + ".d"))
