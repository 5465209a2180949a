"""State dirs a released agent wrote, kept as test data for the agents that follow.

The agent arrives with each new image, so a node's state dir was written by the
release before the one that reads it. Once per release whose formats changed,
tools/make-state-fixture runs that release's agent on sandbox nodes and stores
what it left, under tests/data/state-<version>/<case>/:

  case.json  the agent version and journal format that wrote it; the runs that
             brought the node's root to its state (replayed by the test, with the
             same images and fault points); what `status` showed then; the run the
             next agent must finish;
  state/     the state dir's files, with what belongs to one machine or one test
             run written as placeholders ({{node}}, {{release}}, {{digest:<id>}}).

Image files are not stored: the images are the tests' own, built again, and the
agent fetches them again. Caches (images/, node-manifest.tsv) and a killed run's
mounts are not stored either. tests/integration/test_state_upgrade.py installs
every stored case on a node in the same root state and runs today's agent.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)
DATA = os.path.join(PROJECT, "tests", "data")
for _path in (HERE, os.path.join(PROJECT, "agent"), os.path.join(PROJECT, "tests", "integration")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import world  # noqa: E402
from update_agent.decide import kernel  # noqa: E402
from update_agent.state.journal import FAULT_ENV  # noqa: E402

# What this release stores. A later release adds its own cases; stored ones stay as they are.
CASES = {
    "settled": {
        "about": "a settled node after a successful in-place update A->B",
        "runs": [{"apply": "img-B", "result": "success"}],
        "next": {"apply": "img-C", "result": "success", "resume": False},
    },
    "mixed": {
        "about": "after A->B, an in-place update B->C killed after its sync, before its commit: "
                 "the root holds C's files over B and still says img-B",
        "runs": [{"apply": "img-B", "result": "success"}, {"apply": "img-C", "kill_at": "sync:done"}],
        "next": {"apply": "img-C", "result": "success", "resume": True},
    },
    "rebooting": {
        "about": "a reboot-path update A->R whose reboot was made: the checks after it are due",
        "runs": [{"apply": "img-R", "result": "rebooting"}],
        "next": {"apply": "img-R", "result": "success"},
    },
}
# the state dir's entries a fixture leaves out: image caches, the offered images, mounts
NOT_STORED = ("images", "images-in", "node-manifest.tsv", "lost+found", "work/transfer.list")
STATUS_FIELDS = ("current_image_id", "previous_image_id", "unfinished_update")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class FixtureWorld(world.World):
    """World's images A and B, and the others a fixture names, by image id."""

    VARIANTS = {"img-C": dict(variant="A"),  # A's files again: B->C undoes what A->B did
                "img-R": dict(variant="B", kernel_build=2)}  # same kernel name, rebuilt: a reboot

    def tree_of(self, image_id):
        if image_id in ("img-A", "img-B"):
            return self.tree_a if image_id == "img-A" else self.tree_b
        return self.tree(image_id, image_id=image_id, release=world.RELEASE, **self.VARIANTS[image_id])

    def image_of(self, image_id):
        return self.image_b if image_id == "img-B" else self.ext4(self.tree_of(image_id), image_id)

    def metadata(self, tmp, image_id):
        """The metadata asking the node World.node(tmp) made for image_id, offered to it."""
        image = self.image_of(image_id)
        return world.write_metadata(os.path.join(str(tmp), "meta-%s.json" % image_id), image_id,
                                    world.offered(tmp, image), world.sha256(image))

    def placeholders(self, node, image_ids):
        """{placeholder: this run's value}: longest values first, so that none is cut."""
        values = {"{{digest:%s}}" % i: world.sha256(self.image_of(i)) for i in sorted(image_ids)}
        values["{{node}}"] = node.workdir
        values["{{release}}"] = world.RELEASE
        return values


def image_ids(case):
    return {run["apply"] for run in case["runs"]} | {case["next"]["apply"]}


def replay(w, node, tmp, runs):
    """Bring the node's root to a case's state with today's agent: the runs that made
    the fixture, with the same images and the same fault points."""
    for run in runs:
        kill_at = run.get("kill_at")
        env = dict(os.environ, **{FAULT_ENV: kill_at}) if kill_at else None
        r = world.agent(node.root, "apply", "--json", metadata=w.metadata(tmp, run["apply"]),
                        env=env, own_group=True)
        if kill_at:
            assert r.returncode == -signal.SIGKILL, (
                "apply %s was not killed at %s (exit %s): name the step boundary that is the "
                "same point today: %s" % (run["apply"], kill_at, r.returncode, r.stderr[-500:]))
        else:
            assert r.returncode == 0, r.stderr
            assert json.loads(r.stdout)["result"] == run["result"], r.stdout


# --- making a fixture (the release that writes it) -------------------------------

def to_placeholders(text, values):
    for placeholder, value in sorted(values.items(), key=lambda kv: -len(kv[1])):
        text = text.replace(value, placeholder)
    return text


def leftovers(text, values):
    """What in a stored file still belongs to this machine or this run."""
    found = DIGEST.findall(text)
    found += [v for v in (values["{{node}}"], tempfile.gettempdir() + "/", world.RELEASE) if v in text]
    return found


def capture(state_dir, dest, values):
    """Copy the state dir's files to dest, machine-specific values as placeholders."""
    for dirpath, dirnames, filenames in os.walk(state_dir):
        rel_dir = os.path.relpath(dirpath, state_dir)
        dirnames[:] = sorted(d for d in dirnames
                             if os.path.normpath(os.path.join(rel_dir, d)) not in NOT_STORED
                             and not os.path.ismount(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel in NOT_STORED:
                continue
            with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                text = to_placeholders(f.read(), values)
            left = leftovers(text, values)
            if left:
                raise SystemExit("%s: still machine-specific after the placeholders: %s"
                                 % (rel, ", ".join(sorted(set(left)))))
            os.makedirs(os.path.join(dest, rel_dir), exist_ok=True)
            with open(os.path.join(dest, rel), "w", encoding="utf-8") as f:
                f.write(text)


def status_fields(root):
    r = world.agent(root, "status", "--json")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    return {k: obj[k] for k in STATUS_FIELDS}


def make_case(w, name, case, tmp, dest):
    import update_agent
    from update_agent.state import journal
    node = w.node(tmp)
    try:
        replay(w, node, tmp, case["runs"])
        values = w.placeholders(node, image_ids(case))
        capture(os.path.join(node.root, "var/lib/update-agent"), os.path.join(dest, "state"), values)
        status = json.loads(to_placeholders(json.dumps(status_fields(node.root)), values))
    finally:
        node.stop()
    about = dict(case, agent_version=update_agent.__version__, journal_format=journal.FORMAT,
                 status=status, made_by="tools/make-state-fixture")
    with open(os.path.join(dest, "case.json"), "w") as f:
        json.dump(about, f, indent=1, sort_keys=True)
        f.write("\n")


# --- using a fixture (every later release) ---------------------------------------

def stored():
    """[(version dir, case name)] of every fixture kept under tests/data."""
    out = []
    for version in sorted(os.listdir(DATA)) if os.path.isdir(DATA) else ():
        if version.startswith("state-"):
            out += [(version, c) for c in sorted(os.listdir(os.path.join(DATA, version)))]
    return out


def load(version, name):
    with open(os.path.join(DATA, version, name, "case.json")) as f:
        return json.load(f)


def from_placeholders(text, values):
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def release_mounts_under(path):
    """Unmount what a killed run left mounted below path (a fixture holds files only)."""
    out = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True).stdout
    below = [m for m in out.split() if m.startswith(path.rstrip("/") + "/")]
    for target in sorted(below, key=len, reverse=True):
        subprocess.run(["umount", "--lazy", target], check=True)


def install(node, version, name, values):
    """Replace the node's state dir with a stored one, placeholders rewritten (the
    offered images, a bind mount, and the volume's lost+found stay), and the root
    as that release left it."""
    state_dir = os.path.join(node.root, "var/lib/update-agent")
    release_mounts_under(os.path.join(state_dir, "work"))
    for entry in os.listdir(state_dir):
        if entry not in ("images-in", "lost+found"):
            path = os.path.join(state_dir, entry)
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
    src = os.path.join(DATA, version, name, "state")
    for dirpath, _dirs, filenames in os.walk(src):
        target_dir = os.path.join(state_dir, os.path.relpath(dirpath, src))
        os.makedirs(target_dir, mode=0o700, exist_ok=True)
        for filename in filenames:
            with open(os.path.join(dirpath, filename), encoding="utf-8") as f:
                text = from_placeholders(f.read(), values)
            fd = os.open(os.path.join(target_dir, filename), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
    _undo_what_that_release_did_not_do(node, src)


def _undo_what_that_release_did_not_do(node, state_src):
    """The replay ran today's agent: take off the root what the release that wrote
    the fixture would not have left there. A journal without `fallback` is older
    than the copy of a same-name rebuild's running build (boot/*.update-agent-prev)."""
    try:
        with open(os.path.join(state_src, "journal.json"), encoding="utf-8") as f:
            journal = json.load(f)
    except FileNotFoundError:
        return
    boot = os.path.join(node.root, "boot")
    copies = [n for n in os.listdir(boot) if n.endswith(kernel.FALLBACK_SUFFIX)]
    if "fallback" in journal or not copies:
        return
    with world.writable(node.root):
        for name in copies:
            os.unlink(os.path.join(boot, name))


def main():
    import argparse
    import update_agent
    p = argparse.ArgumentParser(description="store this release's state dirs as test data")
    p.add_argument("--out", default=os.path.join(DATA, "state-" + update_agent.__version__))
    args = p.parse_args()
    if os.path.exists(args.out):
        sys.stderr.write("make-state-fixture: %s exists: a stored fixture is never made again; "
                         "raise update_agent.__version__ for a new one\n" % args.out)
        return 2
    base = tempfile.mkdtemp(prefix="state-fixture-")
    try:
        w = FixtureWorld(os.path.join(base, "world"))
        for name, case in CASES.items():
            tmp = os.path.join(base, name)
            os.makedirs(tmp)
            make_case(w, name, case, tmp, os.path.join(args.out, name))
            print("%s: %s" % (os.path.join(args.out, name), case["about"]))
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", base])
    return 0


if __name__ == "__main__":
    sys.exit(main())
