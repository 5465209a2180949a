"""Agent configuration: built-in defaults overlaid by INI files, as a frozen value.

The base file is /etc/update-agent/update-agent.conf on the node (under
--root), or the file given with --config; then the drop-ins conf.d/*.conf
beside it, in name order, the later file winning; each must be trusted (trust.py:
root-owned, written by nobody else) or it is refused. Each INI section is a
frozen dataclass whose fields declare every key once: default, parser and
documentation (docs/configuration.md lists them all; a test keeps the two in
step). A consumer is handed its section; the Config remembers where each value
came from.
"""

import collections
import configparser
import dataclasses
import logging
import os
import posixpath
import re
import string

from update_agent import names
from update_agent.errors import BadInput
from update_agent.node import trust
from update_agent.node.paths import DEFAULT_STATE_DIR

LOG = logging.getLogger(__name__)


# Node state and identity that a sync must never modify or delete. Globs are
# matched against root-relative paths. /etc/image_id is held back until the commit.
DEFAULT_PRESERVE = (
    "/etc/image_id",
    "/etc/machine-id",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/ssh/ssh_host_*",
    "/etc/fstab",
    "/etc/network",
    "/etc/netplan",
    "/etc/systemd/network",
    "/etc/sysconfig/network-scripts",
    "/var/lib/cloud",
    "/home",
    "/root",
    "/var/log",
    "/var/lib/os-collect-config",
    # the deployer's (cloud-init's or os-apply-config's), not the image's
    "/etc/os-collect-config.conf",
    "/var/lib/heat-config",
    "/tmp",
    "/var/tmp",
    # runtime filesystems and fsck's directory are never image content
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/lost+found",
)

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _parse_size(key, text):
    m = _SIZE.match(text)
    if not m:
        raise BadInput("config %s = %r is not a size (e.g. 20G)" % (key, text))
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def _parse_bool(key, text):
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise BadInput("config %s = %r is not a boolean (true/false)" % (key, text))


def _parse_int(key, text):
    try:
        value = int(text)
    except ValueError:
        raise BadInput("config %s = %r is not an integer" % (key, text))
    if value < 0:
        raise BadInput("config %s = %r must not be negative" % (key, text))
    return value


def _parse_paths(key, text):
    paths = tuple(p.strip() for p in re.split(r"[\n,]", text) if p.strip())
    for p in paths:
        if not p.startswith("/") or "/../" in p + "/":
            raise BadInput("config %s: %r is not an absolute node path" % (key, p))
    return paths


def _parse_template(key, text):
    text = text.strip()
    if not text:
        return ""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as e:
        raise BadInput("config %s = %r is not a valid template: %s" % (key, text, e))
    if fields != {"image_id"}:
        raise BadInput("config %s = %r must use exactly one placeholder, {image_id} (found: %s)"
                       % (key, text, ", ".join("{%s}" % f for f in sorted(fields)) or "none"))
    return text


def _parse_state_dir(key, text):
    paths = _parse_paths(key, text)
    if len(paths) != 1:
        raise BadInput("config %s = %r must be one absolute node path" % (key, text))
    return paths[0]


def _parse_url(key, text):
    text = text.strip()
    if text and not re.match(r"^https?://[^\s]+$", text):
        raise BadInput("config %s = %r is not an http(s) URL" % (key, text))
    return text


def _parse_positive(key, text):
    value = _parse_int(key, text)
    if value == 0:
        raise BadInput("config %s = %r must be at least 1" % (key, text))
    return value


def _parse_host_dir(key, text):
    text = text.strip()
    if text and not text.startswith("/"):
        raise BadInput("config %s = %r is not an absolute path" % (key, text))
    return text


def _parse_units(key, text):
    units = tuple(u.strip() for u in re.split(r"[\n, ]", text) if u.strip())
    for u in units:
        if not re.fullmatch(r"[A-Za-z0-9@._:*?\[\]-]+", u):
            raise BadInput("config %s: %r is not a unit name or pattern" % (key, u))
    return units


# the values Heat gives a software deployment's deploy_action input
HEAT_ACTIONS = ("CREATE", "UPDATE", "DELETE", "SUSPEND", "RESUME")


def _parse_heat_actions(key, text):
    actions = tuple(a.strip().upper() for a in re.split(r"[\n, ]", text) if a.strip())
    for a in actions:
        if a not in HEAT_ACTIONS:
            raise BadInput("config %s: %r is not a Heat deploy_action (one of: %s)"
                           % (key, a, ", ".join(HEAT_ACTIONS)))
    if not actions:  # would silently stop every Heat-driven update
        raise BadInput("config %s is empty: name at least one of %s" % (key, ", ".join(HEAT_ACTIONS)))
    return actions


def _parse_restart_mode(key, text):
    value = text.strip()
    if value not in ("auto", "report"):
        raise BadInput("config %s = %r must be auto or report" % (key, text))
    return value


def _choice(*allowed):
    def parse(key, text):
        value = text.strip()
        if value not in allowed:
            raise BadInput("config %s = %r must be one of: %s" % (key, text, ", ".join(allowed)))
        return value
    return parse


def _parse_backend(key, text):
    value = text.strip()
    if value and not re.match(r"^(etcd3\+https?|redis|rediss|zookeeper|file|https?)://", value):
        raise BadInput("config %s = %r is not a coordination URL (etcd3+http://, redis://, zookeeper://, "
                       "file://) or a FleetLock http(s):// URL" % (key, text))
    return value


def _parse_name(key, text):
    value = text.strip()
    if not names.is_simple_name(value):
        raise BadInput("config %s = %r must be a simple name (letters, digits, ._-)" % (key, text))
    return value


def _parse_urls(key, text):
    urls = tuple(u.strip() for u in re.split(r"[\n, ]", text) if u.strip())
    for u in urls:
        _parse_url(key, u)
    return urls


def _parse_node_id(key, text):
    return _parse_name(key, text) if text.strip() else ""


def key(default, parse, doc):
    """A config key, declared once: its default, its parser and its documentation line."""
    return dataclasses.field(default=default, metadata={"parse": parse, "doc": doc})


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """[agent]: images, the sync, hooks, downloads and the reboot path."""
    image_url_template: str = key("", _parse_template,
                                  "URL of an image when the metadata gives none; must contain {image_id}")
    require_digest: bool = key(True, _parse_bool,
                               "refuse an image whose metadata has no update_agent.image_digest")
    require_signature: bool = key(
        False, _parse_bool,
        "refuse an image without an ed25519 update_agent.image_signature over its digest")
    ca_file: str = key("", _parse_host_dir,
                       "CA bundle (a host path) trusted for every https fetch instead of the system's: "
                       "images, the repository, metadata_url, Heat signals, FleetLock")
    directory_images: tuple = key(
        (), _parse_paths,
        "host directories under which an image may be a plain directory (file:// URL); "
        "none by default: metadata must not point the agent at any directory of the host")
    state_dir: str = key(
        DEFAULT_STATE_DIR, _parse_state_dir,
        "node path of the journal, history, image cache and manifests (a writable filesystem)")
    preserve: tuple = key(
        DEFAULT_PRESERVE, _parse_paths,
        "node paths (globs allowed) the sync never modifies or deletes; replaces the defaults")
    preserve_extra: tuple = key((), _parse_paths, "node paths added to preserve")
    max_image_size: int = key(32 << 30, _parse_size, "largest image the store downloads")
    free_space_margin: int = key(64 << 20, _parse_size,
                                 "free space kept on the root beyond the bytes the sync writes")
    hook_timeout: int = key(1800, _parse_positive,
                            "seconds one hook phase may run before it is killed with its children")
    orc_lock_timeout: int = key(600, _parse_int, "seconds to wait for os-refresh-config's lock")
    remount_retries: int = key(3, _parse_positive,
                               "attempts to remount the root read-only before naming who keeps it busy")
    download_timeout: int = key(
        10800, _parse_int,
        "seconds one image download may take in all before it is abandoned (0: no limit)")
    download_min_rate: int = key(
        10 << 10, _parse_size,
        "bytes/s a download must average over every download_rate_window, or it is "
        "abandoned (0: no limit)")
    download_rate_window: int = key(60, _parse_positive,
                                    "seconds over which download_min_rate is measured")
    # where os-collect-config and an operator put images; "/" allows any node path
    file_image_dirs: tuple = key(
        ("/var/lib/os-collect-config", "/var/lib/update-agent/images-in"), _parse_paths,
        "node directories a file:// image URL may point into (resolved under --root); "
        "any other file:// URL is refused before it is opened (\"/\": any node path; "
        "empty: only the agent's own image cache)")
    http_proxy: str = key("", _parse_url,
                          "http:// proxy (a site's cache) an object repository is fetched "
                          "through; empty: straight from the repository's URL")
    fetch_parallel: int = key(4, _parse_positive,
                              "requests an object repository's fetch keeps in flight at once")
    stage_space_margin: int = key(64 << 20, _parse_size,
                                  "free bytes kept in the state dir beyond the image a download stages")
    stage_inode_margin: int = key(1000, _parse_int,
                                  "free inodes kept in the state dir when a download stages an image")
    reboot: str = key("auto", _choice("auto", "never", "manual"),
                      "when the image's kernel differs: auto reboots (under a fleet slot), never "
                      "refuses, manual stages and waits for `update-agent reboot`; metadata "
                      "update_agent.reboot wins")
    reboot_method: str = key("reboot", _choice("reboot", "kexec"),
                             "systemctl reboot, or systemctl kexec where the machine supports it")

    @property
    def preserved(self):
        return tuple(self.preserve) + tuple(self.preserve_extra)


@dataclasses.dataclass(frozen=True)
class DaemonConfig:
    """[daemon]: how the daemon learns of new metadata."""
    metadata_url: str = key("", _parse_url,
                            "poll this URL for metadata (JSON) instead of watching os-collect-config's cache")
    poll_interval: int = key(
        30, _parse_positive,
        "seconds between polls of the cache (fallback when inotify is missing) or metadata_url")
    splay: int = key(30, _parse_int,
                     "up to this many random seconds added to each poll, so a fleet never polls in lockstep")
    metadata_timeout: int = key(10, _parse_positive, "seconds a metadata_url request may take")
    metrics_dir: str = key("", _parse_host_dir,
                           "node_exporter textfile collector directory for update_agent.prom (empty: off)")


@dataclasses.dataclass(frozen=True)
class HeatConfig:
    """[heat]: signalling Heat software deployments."""
    signal_retries: int = key(5, _parse_int, "retries of a Heat signal that got a 5xx or no answer")
    signal_timeout: int = key(30, _parse_positive, "seconds one Heat signal request may take")
    deploy_actions: tuple = key(("UPDATE",), _parse_heat_actions,
                                "deploy_action values a deployment is acted on for; any other is "
                                "signalled done without an update (the template's actions property "
                                "is the primary control)")


@dataclasses.dataclass(frozen=True)
class RestartConfig:
    """[restart]: which units that run replaced code are restarted."""
    restart_mode: str = key("auto", _parse_restart_mode,
                            "auto: restart the units that run replaced code (when systemd runs this "
                            "root); report: only report them")
    never_restart: tuple = key(
        ("dbus.service", "dbus-broker.service", "systemd-logind.service", "user@*.service",
         "getty@*.service", "serial-getty@*.service", "console-getty.service",
         "container-getty@*.service"), _parse_units,
        "units (globs) never restarted; they are reported as running old code")
    never_restart_extra: tuple = key((), _parse_units, "units added to never_restart")
    leave_to_hooks: tuple = key(("pacemaker.service", "pacemaker_remote.service", "corosync.service"),
                                _parse_units,
                                "cluster-managed units (globs) the agent leaves to the quiesce hooks")


@dataclasses.dataclass(frozen=True)
class HealthConfig:
    """[health]: the checks after an update."""
    urls: tuple = key((), _parse_urls, "HTTP(S) URLs that must answer 2xx/3xx after an update")
    timeout: int = key(60, _parse_positive,
                       "seconds the probes may take to pass (and each health.d phase may run)")
    rollback: bool = key(True, _parse_bool, "roll back to the previous image when a health check fails")


@dataclasses.dataclass(frozen=True)
class CoordinationConfig:
    """[coordination]: the fleet's slots."""
    backend: str = key("", _parse_backend,
                       "engine URL (etcd3+http://host:2379, redis://host, zookeeper://host, file:///dir) "
                       "or a FleetLock base URL; empty: no coordination")
    group: str = key("default", _parse_name, "the group whose slots this node takes")
    max_holders: int = key(1, _parse_positive, "how many nodes of the group at once")
    coordinate: str = key("always", _choice("reboot", "always", "never"),
                          "take a slot for in-place updates and reboots (always), for reboots "
                          "only, or never")
    max_hold_time: int = key(
        7200, _parse_positive,
        "seconds after which a held reboot slot is reported as overdue (never taken over)")
    failure_threshold: int = key(
        3, _parse_int, "failed updates after which the group stops taking slots until cleared (0: never)")
    slot_timeout: int = key(3600, _parse_positive,
                            "seconds to wait for a lease slot (in-place updates, slot hold)")
    lease_ttl: int = key(30, _parse_positive,
                         "seconds a lease slot (in-place update, slot hold) outlives a holder that "
                         "died; renewed every third of it")
    node_id: str = key("", _parse_node_id, "this node's id in the slot records (default: its machine-id)")


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    """[rollout]: a fleet rollout policy for fleets without Heat."""
    policy_file: str = key("", _parse_host_dir,
                           "JSON rollout policy (a host path) used when the metadata carries no "
                           "update_agent.rollout; empty: none")
    poll_interval: int = key(10, _parse_positive,
                             "seconds between looks at the engine while waiting for a stage step, "
                             "on an engine without a watch (Redis, ZooKeeper)")
    watch_timeout: int = key(60, _parse_positive,
                             "on etcd, a waiting node looks again when the fleet wakes it, or "
                             "after this many seconds")
    member_ttl: int = key(30, _parse_positive,
                          "seconds a member record lives without a heartbeat (one every third of it)")


# INI section -> its dataclass, in the order `update-agent config` shows them
SECTIONS = {"agent": AgentConfig, "daemon": DaemonConfig, "heat": HeatConfig,
            "restart": RestartConfig, "health": HealthConfig, "coordination": CoordinationConfig,
            "rollout": RolloutConfig}


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole configuration: one frozen value per INI section, so that each
    consumer is handed its own section."""
    agent: AgentConfig = AgentConfig()
    daemon: DaemonConfig = DaemonConfig()
    heat: HeatConfig = HeatConfig()
    restart: RestartConfig = RestartConfig()
    health: HealthConfig = HealthConfig()
    coordination: CoordinationConfig = CoordinationConfig()
    rollout: RolloutConfig = RolloutConfig()
    source: str = "(defaults)"
    # "section.key" -> the file its value came from
    origins: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def origin(self, section, name):
        return self.origins.get("%s.%s" % (section, name), "(default)")


Key = collections.namedtuple("Key", "section name parse doc")

# Every key, derived from the sections' fields (declared there once)
KEYS = tuple(Key(section, f.name, f.metadata["parse"], f.metadata["doc"])
             for section, cls in SECTIONS.items() for f in dataclasses.fields(cls))
_BY_SECTION = {(k.section, k.name): k for k in KEYS}


def _conf_files(directory):
    """The *.conf drop-ins in directory, in name order."""
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".conf"))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [os.path.join(directory, n) for n in names]


def _trusted_sources(path, root):
    """The base file and its drop-ins as host paths to read, each judged by trust.check.

    root: where the walk starts, the node's root; a file outside it (an operator's
    --config beside a sandbox) is judged from its own directory down."""
    path = os.path.abspath(path)
    node = trust.node_path(root, path) if root is not None else None
    if node is None:
        root, node = os.path.dirname(path), "/" + os.path.basename(path)
    sources = [trust.check(root, node, "config file", missing_ok=True)]
    conf_d = posixpath.join(posixpath.dirname(node), "conf.d")
    listed = _conf_files(trust.check(root, conf_d, "config drop-in directory", missing_ok=True))
    for name in (os.path.basename(p) for p in listed):
        sources.append(trust.check(root, posixpath.join(conf_d, name), "config drop-in"))
    return sources


def _read(path):
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f, source=path)
    except FileNotFoundError:
        return None
    except (configparser.Error, UnicodeDecodeError) as e:
        raise BadInput("config %s cannot be parsed: %s" % (path, str(e).splitlines()[0]))
    except OSError as e:
        raise BadInput("config %s cannot be read: %s" % (path, e.strerror))
    if parser.defaults():
        raise BadInput("config %s: keys under [DEFAULT] (%s) are not read; put them under a "
                       "section (%s)" % (path, ", ".join(sorted(parser.defaults())),
                                         ", ".join("[%s]" % s for s in SECTIONS)))
    values = {}
    for section in parser.sections():
        if section not in SECTIONS:
            raise BadInput("config %s: unknown section [%s] (expected %s)"
                           % (path, section, ", ".join("[%s]" % s for s in SECTIONS)))
        for name, text in parser.items(section):
            key = _BY_SECTION.get((section, name))
            if key is None:
                raise BadInput("config %s: unknown key %r (= %r) in [%s]" % (path, name, text, section))
            values.setdefault(section, {})[name] = key.parse(name, text)
    return values


def load(path=None, root=None):
    """Read the base file at path (a host path) and its conf.d drop-ins.

    A missing base file means the defaults (drop-ins still apply). Each file
    read must be trusted from root (the node's) down: an untrusted one is
    refused (trust.Untrusted, exit 2), never skipped.
    """
    if path is None:
        return Config()
    values, origins, read = {}, {}, []
    for source in _trusted_sources(path, root):
        got = _read(source)
        if got is None:
            continue
        read.append(source)
        for section, keys in got.items():
            values.setdefault(section, {}).update(keys)
            origins.update({"%s.%s" % (section, name): source for name in keys})
    LOG.debug("config from %s: %s", read, values)
    if not read:
        return Config()
    sections = {section: SECTIONS[section](**keys) for section, keys in values.items()}
    return Config(source=", ".join(read), origins=origins, **sections)


def describe(config):
    """[(section, key, value, origin)] for every key, as `update-agent config` shows:
    grouped by section, so each is shown once."""
    return [(k.section, k.name, getattr(getattr(config, k.section), k.name),
             config.origin(k.section, k.name)) for k in KEYS]
