"""Fault injection: kill the agent anywhere, start it again, check every promise.

Each trial brings up a fresh sandbox node on image A, starts `update-agent apply`
to image B in its own process group, and SIGKILLs that whole group (so no
orphaned rsync keeps writing) either exactly at a journal step boundary (the
agent kills itself there when UPDATE_AGENT_FAULT_KILL_AT says so) or at a random
instant while the sync runs. Right after the kill, and again after the agent
is started once more, it checks the promises of DESIGN.md:

  * /etc/image_id names B only if B's content is fully on disk;
  * preserved paths are byte-identical;
  * the node converges to B; the root is read-only again;
  * no mount or loop device leaked.

Usage (as root, in a private mount namespace; outside CI for long runs):
    unshare -m --propagation private .venv/bin/python tools/faults.py --trials 1000 --seed 7
"""

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)
sys.path[:0] = [HERE, os.path.join(PROJECT, "agent"), os.path.join(PROJECT, "tests", "integration")]

import sandbox  # noqa: E402
import world  # noqa: E402
from update_agent.apply.inplace import STEPS  # noqa: E402
from update_agent.state.journal import FAULT_ENV  # noqa: E402


def boundary_points():
    return ["%s:%s" % (step, state) for step in STEPS for state in ("started", "done")]


def many_files_tree(base, name, variant, count=1500):
    """A/B trees whose sync takes long enough to be killed in the middle of it."""
    tree = sandbox.build_node_tree(os.path.join(base, name), "img-" + variant, world.RELEASE, variant)
    bulk = os.path.join(tree, "usr/share/bulk")
    os.makedirs(bulk, exist_ok=True)
    for i in range(count):
        with open(os.path.join(bulk, "f%04d" % i), "wb") as f:
            f.write(("%s-%d-" % (variant, i)).encode() * 200)
    sandbox._clamp(tree)
    return tree


class Trials:
    def __init__(self, base):
        self.base = base
        self.tree_a = many_files_tree(base, "A", "A")
        self.tree_b = many_files_tree(base, "B", "B")
        self.image_b = os.path.join(base, "B.ext4")
        sandbox.mkfs(self.image_b, 64, tree=self.tree_b)
        self.root_a = sandbox.make_root_image(self.tree_a, os.path.join(base, "rootA.ext4"))

    def _agent(self, root, env=None):
        e = dict(os.environ, PYTHONPATH=os.path.join(PROJECT, "agent"), **(env or {}))
        return subprocess.Popen([sys.executable, "-m", "update_agent", "--root", root,
                                 "--metadata", self._meta(root), "apply"], env=e, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def _meta(self, root):
        """Image B's metadata for the node at root, the image offered to that node."""
        workdir = os.path.dirname(root)
        path = os.path.join(workdir, "meta.json")
        if not os.path.exists(path):
            world.write_metadata(path, "img-B", sandbox.offer(workdir, self.image_b),
                                 world.sha256(self.image_b))
        return path

    def trial(self, n, point=None, delay=None):
        """One kill and restart; returns a description of the kill. Raises on a broken promise."""
        work = tempfile.mkdtemp(prefix="trial-%d-" % n, dir=self.base)
        root_img = os.path.join(work, "root.ext4")
        subprocess.run(["cp", "--sparse=always", self.root_a, root_img], check=True)
        node = sandbox.SandboxNode(os.path.join(work, "node"), root_img).start()
        try:
            preserved = {rel: _read(node.root, rel) for rel in world.PRESERVED_FILES}
            if point:
                proc = self._agent(node.root, {FAULT_ENV: point})
                proc.wait(timeout=120)
                how = "killed at %s" % point
            else:
                proc = self._agent(node.root)
                journal = os.path.join(node.root, "var/lib/update-agent/journal.json")
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and '"sync": "started"' not in _text(journal):
                    if proc.poll() is not None:
                        break
                    time.sleep(0.001)
                time.sleep(delay)
                how = "killed %.0f ms into the sync" % (delay * 1000)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    how += " (it had finished)"
                proc.wait()
            self.check_after_kill(node)
            for _ in range(3):  # a restart converges (a kill in the error path may need two)
                r = self._agent(node.root)
                _, err = r.communicate(timeout=300)
                if r.returncode == 0:
                    break
            assert r.returncode == 0, "restart after %s failed: %s" % (how, err.strip())
            self.check_converged(node, preserved)
        finally:
            node.stop()
            subprocess.run(["rm", "-rf", work])
        # only devices backed by this trial's files: other processes attach their own
        leaked = world.loop_devices_under(os.path.realpath(work))
        assert not leaked, "%s: loop devices leaked: %s" % (how, leaked)
        return how

    def check_after_kill(self, node):
        image_id = _read(node.root, "etc/image_id")
        if image_id == b"img-B\n":
            world.assert_matches_image(node.root, self.tree_b)  # named only once fully on disk
        else:
            assert image_id == b"img-A\n", image_id

    def check_converged(self, node, preserved):
        world.assert_matches_image(node.root, self.tree_b)
        assert _read(node.root, "etc/image_id") == b"img-B\n"
        for rel, body in preserved.items():
            assert _read(node.root, rel) == body, "preserved /%s changed" % rel
        assert "ro" in world.root_mount_options(node.root), "root left read-write"
        work = os.path.join(node.root, "var/lib/update-agent/work")
        mounted = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True,
                                 text=True).stdout.split()
        assert not [m for m in mounted if m.startswith(work)], "image mount leaked"


def _read(root, rel):
    with open(os.path.join(root, rel), "rb") as f:
        return f.read()


def _text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def plan_trials(count, seed):
    """Every step boundary first, then random instants during the sync."""
    rng = random.Random(seed)
    points = boundary_points()
    out = [(p, None) for p in points[:count]]
    while len(out) < count:
        out.append((None, rng.uniform(0.0, 0.25)))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    base = tempfile.mkdtemp(prefix="faults-")
    trials = Trials(base)
    failures = 0
    for n, (point, delay) in enumerate(plan_trials(args.trials, args.seed)):
        try:
            print("trial %d: %s: ok" % (n, trials.trial(n, point, delay)), flush=True)
        except AssertionError as e:
            failures += 1
            print("trial %d: BROKEN PROMISE: %s" % (n, e), flush=True)
    subprocess.run(["rm", "-rf", base])
    print("%d trials, %d broken promises" % (args.trials, failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
