"""The state journal (one update in progress), the image state and the history.

Every write is atomic. Steps are recorded before they start and after they
end, so a killed agent resumes where it stopped. The journal carries a format
version: the agent arrives with each new image, so a newer agent must be able
to read and finish what an older one journalled.
"""

import dataclasses
import json
import logging
import os
import signal

from update_agent import statefile
from update_agent.errors import AgentError

LOG = logging.getLogger(__name__)

FORMAT = 1
STATE_FILE = "images.json"
# The steps of an in-place apply, in order (apply.py runs them).
# verify: the change set matches the image before the commit names it
STEPS = ("pre-configure", "remount-rw", "pin", "sync", "verify", "commit", "configure", "post-configure",
         "migration", "restart", "remount-ro")
# The reboot path (rebooting.py): up to the reboot, then after it.
# fallback: a same-name rebuild's copy of the running build, made before the sync
BEFORE_REBOOT = ("slot", "pre-configure", "remount-rw", "pin", "fallback", "sync", "verify", "commit",
                 "bootloader", "remount-ro", "reboot")
# health before the old kernel goes and the new one becomes the default: an unhealthy
# node keeps its fallback; the old kernel goes before boot-default, whose update-grub
# then drops its menu entries
AFTER_REBOOT = ("boot-check", "remount-rw-after", "configure", "post-configure", "migration",
                "health", "old-kernel", "boot-default", "remount-ro-after", "release")
REBOOT_STEPS = BEFORE_REBOOT + AFTER_REBOOT


@dataclasses.dataclass
class Journal:
    image_id: str
    digest: str
    previous_image_id: str
    previous_digest: str
    action: str
    root_was_ro: bool
    started_at: float
    steps: dict = dataclasses.field(default_factory=dict)   # name -> started|done
    step_s: dict = dataclasses.field(default_factory=dict)  # name -> seconds its last run took
    status: str = "running"                                 # running|failed|done
    failed_step: str = ""
    error: str = ""
    restarted: dict = dataclasses.field(default_factory=dict)
    kernel: str = ""              # reboot path: the kernel to boot
    old_kernel: str = ""          # reboot path: the kernel that ran before
    # reboot path: the copy of the running build (kernel.fallback_release) that the
    # boot loader falls back to, when the image rebuilds the kernel under its name
    fallback: str = ""
    kept: list = dataclasses.field(default_factory=list)  # the old kernel's files, kept
    note: str = ""
    boot_id: str = ""             # reboot path: the boot the reboot was asked from
    # the node id that holds a reboot slot: the one this reboot took, or the one an
    # unhealthy reboot this update superseded still holds (given back on success)
    slot_node: str = ""
    # reboot path: the units failed before it (None: systemd does not run this root),
    # so that the health check after the reboot counts only the units it broke
    failed_units: list = None
    format: int = FORMAT

    @property
    def unfinished(self):
        # "superseded": an operator chose to start over (update-agent reboot after a failed boot)
        return self.status not in ("done", "superseded")

    def done(self, step):
        return self.steps.get(step) == "done"

    @property
    def awaiting_boot(self):
        """The reboot was made (or recorded): the checks after it are due."""
        return (self.action == "reboot" and self.unfinished and self.done("reboot")
                and self.failed_step != "boot-check")

    def checks_due_for(self, image_id):
        """The checks after the reboot come before anything else, unless the node failed
        them (unhealthy) and the metadata now asks for another image: a fix, or the way
        back, which must not wait for a health check that image may never pass."""
        return self.awaiting_boot and (self.failed_step != "health" or self.image_id == image_id)

    def holds_slot(self):
        """A reboot slot taken and not yet released (released under slot_node); a boot
        that came back on the old kernel released it already."""
        if self.action != "reboot":
            return bool(self.slot_node)  # inherited; cleared once given back
        return bool(self.slot_node) and not self.done("release") and self.failed_step != "boot-check"

    @property
    def mixed(self):
        """The sync began and the commit has not happened: the root holds part of
        the image over the previous one."""
        return (self.unfinished and self.steps.get("sync", "pending") != "pending"
                and not self.done("commit"))

    def stopped_at(self):
        """The first step not done, in run order (the saved dict is sorted by name)."""
        for name in (REBOOT_STEPS if self.action == "reboot" else STEPS):
            if self.steps.get(name, "pending") != "done":
                return name
        return ""


# Fault injection for tools/faults.py: UPDATE_AGENT_FAULT_KILL_AT=<step>:<started|done>
# makes the agent SIGKILL its whole process group (rsync and hooks included) right
# after journaling that state, exactly as a crash at that boundary would leave it.
FAULT_ENV = "UPDATE_AGENT_FAULT_KILL_AT"


def _fault_point(where):
    if os.environ.get(FAULT_ENV) == where:
        os.killpg(os.getpgrp(), signal.SIGKILL)


def _upgrade(data):
    """Bring an older journal format up to FORMAT (none older exists yet)."""
    fmt = data.get("format")
    if not isinstance(fmt, int):
        raise AgentError("journal has no valid format version: %r" % (fmt,))
    if fmt > FORMAT:
        raise AgentError("journal format %d is newer than this agent understands (%d); "
                         "upgrade update-agent" % (fmt, FORMAT))
    return data


class Store:
    """Journal, image state and history under the agent's state dir."""

    def __init__(self, state_dir):
        self.state_dir = state_dir
        self.journal_path = os.path.join(state_dir, "journal.json")
        self.state_path = os.path.join(state_dir, STATE_FILE)
        self.history_path = os.path.join(state_dir, "history.jsonl")

    def _write_json(self, path, data):
        os.makedirs(self.state_dir, exist_ok=True)
        statefile.write_atomic(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode(),
                               mode=0o600)

    def load_journal(self):
        try:
            with open(self.journal_path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise AgentError("journal %s is corrupt: %s" % (self.journal_path, e))
        if not isinstance(data, dict):
            raise AgentError("journal %s is corrupt: not a JSON object" % self.journal_path)
        data = _upgrade(data)
        known = {f.name for f in dataclasses.fields(Journal)}
        return Journal(**{k: v for k, v in data.items() if k in known})

    def save_journal(self, journal):
        self._write_json(self.journal_path, dataclasses.asdict(journal))

    def step(self, journal, name, state):
        journal.steps[name] = state
        self.save_journal(journal)
        _fault_point("%s:%s" % (name, state))

    def load_state(self):
        """{'current': {'image_id', 'digest'}, 'previous': {...}} as committed."""
        try:
            with open(self.state_path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return {}
        except ValueError as e:
            raise AgentError("image state %s is corrupt: %s" % (self.state_path, e))

    def commit_state(self, image_id, digest, previous_image_id="", previous_digest=""):
        state = self.load_state()
        current = state.get("current") or {}
        if current.get("image_id") not in (None, image_id):
            state["previous"] = current
        elif previous_image_id and previous_image_id != image_id:
            state["previous"] = {"image_id": previous_image_id, "digest": previous_digest}
        state["current"] = {"image_id": image_id, "digest": digest}
        self._write_json(self.state_path, state)

    def save_change_list(self, started_at, image_id, plan, keep=20):
        """Keep the full change list of an update beside the history (the last `keep`)."""
        directory = os.path.join(self.state_dir, "changes")
        os.makedirs(directory, exist_ok=True)
        name = "%d-%s.json" % (int(started_at), image_id)
        ch = plan.changes
        data = {"image_id": image_id, "changed": ["/" + p for p in ch.changed] +
                ["/" + rel for rel, _ in plan.accounts],
                "added": ["/" + p for p in ch.added], "deleted": ["/" + p for p in ch.deleted]}
        statefile.write_atomic(os.path.join(directory, name),
                               json.dumps(data, indent=0).encode("utf-8", "surrogateescape"),
                               mode=0o600)
        for old in sorted(os.listdir(directory))[:-keep]:
            os.unlink(os.path.join(directory, old))
        return name

    def load_change_list(self, name):
        if not name or "/" in name:
            return None
        return self._load_json(os.path.join("changes", name), None)

    def append_history(self, record):
        os.makedirs(self.state_dir, exist_ok=True)
        line = json.dumps(record, sort_keys=True) + "\n"
        fd = os.open(self.history_path,
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    # --- small state files: hold, Heat deployments done, the daemon's status ---
    def _load_json(self, name, default):
        try:
            with open(os.path.join(self.state_dir, name), encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return default
        except ValueError as e:
            LOG.warning("ignoring corrupt %s: %s", name, e)
            return default

    def hold(self):
        """{'reason', 'since'} when automatic updates are held, else None."""
        return self._load_json("hold.json", None)

    def set_hold(self, reason, since):
        self._write_json(os.path.join(self.state_dir, "hold.json"), {"reason": reason, "since": since})

    def clear_hold(self):
        try:
            os.unlink(os.path.join(self.state_dir, "hold.json"))
            return True
        except FileNotFoundError:
            return False

    def deployments_done(self):
        return self._load_json("deployments.json", {})

    def mark_deployment_done(self, key, record):
        done = self.deployments_done()
        done[key] = record
        self._write_json(os.path.join(self.state_dir, "deployments.json"), done)

    def rejected(self):
        """{image_id: {"digest", "why", "at"}}: images rolled back from; not applied again."""
        return self._load_json("rejected.json", {})

    def reject(self, image_id, digest, why, at):
        data = self.rejected()
        data[image_id] = {"digest": digest, "why": why, "at": at}
        self._write_json(os.path.join(self.state_dir, "rejected.json"), data)

    def unreject(self, image_id):
        data = self.rejected()
        if data.pop(image_id, None) is not None:
            self._write_json(os.path.join(self.state_dir, "rejected.json"), data)

    def save_status(self, status):
        self._write_json(os.path.join(self.state_dir, "status.json"), status)

    def load_status(self):
        return self._load_json("status.json", {})

    def history(self, limit=10):
        try:
            with open(self.history_path, encoding="utf-8") as f:
                lines = f.readlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines[-limit:]:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a torn last line after a crash
        return out
