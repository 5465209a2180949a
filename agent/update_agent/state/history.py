"""The history: one JSON line per update (history.jsonl), and beside it the full
change list of the last updates (changes/)."""

import json
import logging
import os

from update_agent.state import statecheck, statefile

LOG = logging.getLogger(__name__)

CHANGES_FIX = "ignored: this update's change list is not shown"


class History:
    def __init__(self, state_dir):
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, "history.jsonl")
        self.changes_dir = os.path.join(state_dir, "changes")

    def append(self, record):
        os.makedirs(self.state_dir, exist_ok=True)
        line = json.dumps(record, sort_keys=True) + "\n"
        fd = os.open(self.path,
                     os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = "\n" + line  # a crash tore the last line: do not glue this one to it
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def last(self, limit=10):
        """The last `limit` readable records, oldest first. A torn last line is what a
        crash leaves: skipped. Other unreadable lines are skipped with one warning."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        except OSError as e:
            LOG.warning("%s: cannot be read (%s); no history shown", self.path, e.strerror)
            return []
        records, bad = statecheck.history_records(data, limit)
        if bad:
            number, wrong = bad[0]  # the latest
            LOG.warning("%s: line %d: %s; skipped (unreadable lines: %d)", self.path,
                        number, wrong, len(bad))
        return records

    def save_change_list(self, started_at, image_id, plan, keep=20):
        """Keep the full change list of an update beside the history (the last `keep`)."""
        os.makedirs(self.changes_dir, exist_ok=True)
        name = "%d-%s.json" % (int(started_at), image_id)
        ch = plan.changes
        data = {"image_id": image_id, "changed": ["/" + p for p in ch.changed] +
                ["/" + rel for rel, _ in plan.accounts],
                "added": ["/" + p for p in ch.added], "deleted": ["/" + p for p in ch.deleted]}
        statefile.write_atomic(os.path.join(self.changes_dir, name),
                               json.dumps(data, indent=0).encode("utf-8", "surrogateescape"),
                               mode=0o600)
        for old in sorted(os.listdir(self.changes_dir))[:-keep]:
            os.unlink(os.path.join(self.changes_dir, old))
        return name

    def load_change_list(self, name):
        if not name or "/" in name:
            return None
        return statecheck.load_or_warn(os.path.join(self.changes_dir, name),
                                       statecheck.CHANGE_LIST, CHANGES_FIX, None)
