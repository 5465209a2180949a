"""Agent configuration: built-in defaults overlaid by an INI file, as a frozen value.

The file is /etc/update-agent/update-agent.conf on the node (under --root), or
the file given with --config. Every key is documented in docs/configuration.md.
"""

import configparser
import dataclasses
import logging
import re
import string

from update_agent.errors import BadInput
from update_agent.paths import DEFAULT_STATE_DIR

LOG = logging.getLogger(__name__)

SECTION = "agent"

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


@dataclasses.dataclass(frozen=True)
class Config:
    image_url_template: str = ""
    require_digest: bool = True
    state_dir: str = DEFAULT_STATE_DIR
    preserve: tuple = DEFAULT_PRESERVE
    preserve_extra: tuple = ()
    max_image_size: int = 32 << 30
    free_space_margin: int = 64 << 20
    hook_timeout: int = 1800
    orc_lock_timeout: int = 600
    remount_retries: int = 3
    source: str = "(defaults)"

    @property
    def preserved(self):
        return tuple(self.preserve) + tuple(self.preserve_extra)


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


_PARSERS = {
    "image_url_template": _parse_template,
    "require_digest": _parse_bool,
    "state_dir": lambda k, t: _parse_paths(k, t)[0] if _parse_paths(k, t) else DEFAULT_STATE_DIR,
    "preserve": _parse_paths,
    "preserve_extra": _parse_paths,
    "max_image_size": _parse_size,
    "free_space_margin": _parse_size,
    "hook_timeout": _parse_int,
    "orc_lock_timeout": _parse_int,
    "remount_retries": _parse_int,
}


def load(path=None):
    """Read the config file at path (a host path); a missing file means defaults."""
    if path is None:
        return Config()
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f, source=path)
    except FileNotFoundError:
        return Config()
    except (configparser.Error, UnicodeDecodeError) as e:
        raise BadInput("config %s cannot be parsed: %s" % (path, str(e).splitlines()[0]))
    values = {}
    if parser.defaults():
        raise BadInput("config %s: keys under [DEFAULT] (%s) are not read; put them under [%s]"
                       % (path, ", ".join(sorted(parser.defaults())), SECTION))
    for section in parser.sections():
        if section != SECTION:
            raise BadInput("config %s: unknown section [%s] (expected [%s])" % (path, section, SECTION))
    if parser.has_section(SECTION):
        for key, text in parser.items(SECTION):
            if key not in _PARSERS:
                raise BadInput("config %s: unknown key %r (= %r) in [%s]" % (path, key, text, SECTION))
            values[key] = _PARSERS[key](key, text)
    LOG.debug("config from %s: %s", path, values)
    return dataclasses.replace(Config(), source=path, **values)
