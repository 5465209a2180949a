"""Read /proc/self/mountinfo: how the root is mounted, what is mounted below it."""

import dataclasses
import os
import re


@dataclasses.dataclass(frozen=True)
class Mount:
    mount_point: str
    options: tuple        # per-mount options (ro/rw, nodev, ...)
    fstype: str
    source: str
    super_options: tuple  # filesystem options (errors=remount-ro, ...)

    @property
    def read_only(self):
        return "ro" in self.options


def _unescape(field):
    # mountinfo escapes space, tab, newline and backslash as octal
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse(text):
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 10:
            continue
        sep = fields.index("-")
        mounts.append(Mount(_unescape(fields[4]), tuple(fields[5].split(",")), fields[sep + 1],
                            _unescape(fields[sep + 2]), tuple(fields[sep + 3].split(","))))
    return mounts


def read(path="/proc/self/mountinfo"):
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse(f.read())


def mount_of(mounts, path):
    """The mount that holds path (the last mounted at the longest prefix)."""
    path = os.path.realpath(path)
    best = None
    for m in mounts:
        mp = m.mount_point
        if path == mp or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) >= len(best.mount_point):
                best = m
    return best


def is_mount_point(mounts, path):
    path = os.path.realpath(path)
    return any(m.mount_point == path for m in mounts)


def below(mounts, root):
    """Root-relative mount points strictly inside root."""
    root = os.path.realpath(root)
    prefix = root.rstrip("/") + "/"
    return sorted({m.mount_point[len(prefix):] for m in mounts
                   if m.mount_point.startswith(prefix)})
