"""Distribution side by side: each way of taking a node from image A to image B over
HTTP on 127.0.0.1, the same nginx origin (nginx_local) serving every one of them.

Per workload, every method's server side is prepared untimed (publish, commit, make);
then its node side is timed from "start" to "node tree equals B", cache dropped first.
The origin's access log gives the bytes (response bodies) and requests; os.wait4 gives
the peak RSS of the node's largest process. Every result is checked against B: a
fast wrong answer does not count.

Methods:
* update-agent objects: `update-agent publish` A then B into a repository; the node at
  A gets metadata naming the repository and B's manifest digest.
* update-agent whole image: today's path, B as a tar.zst (the smallest whole image the
  agent takes) fetched and applied by the agent on a sandbox node.
* ostree: an archive repository with commits A and B; the node's bare repository has A
  checked out; `ostree pull` B, then `ostree checkout` into a fresh directory (hard
  links from the repository, as `ostree admin deploy` makes a deployment).
* casync: `casync make` of B; the node runs `casync extract` with its tree A as the seed.
* zsync: B as an uncompressed tar (its files' bytes one after another, with no free
  blocks or layout of a filesystem between them: the best case for zsync's rolling
  match against A's tar); fetch with `zsync -i A.tar`, then the apply, `tar -x` into a
  fresh directory. Both are reported, and the wall time is their sum.
* lower bound: zstd -3 of each changed or added file of B, alone; and of a tar of them.
"""

import dataclasses
import json
import logging
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import bench as bench_mod
import nginx_local
from update_agent.decide import repo_format
from update_agent.node import manifest

LOG = logging.getLogger(__name__)
MiB = 1 << 20
METHODS = ("update-agent objects", "update-agent whole image", "ostree pull + checkout",
           "casync extract (seed A)", "zsync (fetch + apply)")
PEERS = METHODS[2:]
# A reproducible tar: by default the pax headers that --xattrs brings carry each file's
# atime and ctime and tar's PID, so A's and B's tars would differ at every member
# (zsync then fetched 25 times what it needs)
TAR = ["tar", "--sort=name", "--numeric-owner", "--xattrs", "--acls",
       "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime"]


@dataclasses.dataclass
class Result:
    method: str
    bytes: int = 0
    requests: int = 0
    wall: float = 0.0
    peak_mb: float = 0.0
    note: str = ""
    error: str = ""            # "" when the method ran
    parts: dict = dataclasses.field(default_factory=dict)   # its own split of the wall time


def run_child(argv, env=None, cwd=None):
    """One node-side process: (seconds, peak RSS in MB, stdout). Raises naming the
    command and its stderr if it fails."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("r") as peak:
        # GNU time forks the command itself: a child forked from this Python process
        # would carry our own RSS in its peak until it execs
        gnu_time = os.path.exists("/usr/bin/time")
        wrapped = (["/usr/bin/time", "-f", "%M", "-o", peak.name] if gnu_time else []) + argv
        t = time.monotonic()
        proc = subprocess.Popen(wrapped, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - t
        out.seek(0)
        err.seek(0)
        code = os.waitstatus_to_exitcode(status)
        if code:
            text = (err.read().strip() or out.read().strip())[-1500:]
            raise RuntimeError("%s exited %d: %s" % (" ".join(argv[:3]), code, text))
        told = peak.read().split()
        kib = int(told[-1]) if gnu_time and told else usage.ru_maxrss
        return seconds, kib / 1024.0, out.read()


def same_tree(out, tree_b):
    """'' if out holds B's paths, contents, modes, owners and links; else the first
    differences (mtimes and hard links are not compared: ostree drops both)."""
    r = bench_mod.sh(["rsync", "-n", "-i", "-c", "-rlpgoD", "--numeric-ids", "--delete",
                      tree_b + "/", out + "/"])
    diffs = [line for line in r.stdout.splitlines() if line.strip()]
    return "" if not diffs else "%d differ, e.g. %s" % (len(diffs), "; ".join(diffs[:3]))


def _zstd_bytes(argv, stdin=None):
    r = subprocess.run(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
    return len(r.stdout)


def changed_files(tree_a, tree_b):
    """B's regular files that A lacks or holds with other bytes."""
    ea = manifest.build(tree_a, manifest.Excluder(()), skip_devices=False)[0]
    eb = manifest.build(tree_b, manifest.Excluder(()), skip_devices=False)[0]
    return sorted(r for r, e in eb.items()
                  if e.kind == "f" and (r not in ea or ea[r].kind != "f" or ea[r].digest != e.digest))


def lower_bound(tree_a, tree_b, work):
    """(sum of zstd -3 of each changed file, zstd -3 of a tar of them, how many)."""
    changed = changed_files(tree_a, tree_b)
    each = sum(_zstd_bytes(["zstd", "-3", "-c", "-q", os.path.join(tree_b, r)]) for r in changed)
    listing = os.path.join(work, "changed.list")
    with open(listing, "w") as f:
        f.write("".join(r + "\n" for r in changed))
    tar = subprocess.Popen(TAR + ["-cf", "-", "-C", tree_b, "-T", listing], stdout=subprocess.PIPE)
    together = _zstd_bytes(["zstd", "-3", "-c", "-q"], stdin=tar.stdout)
    tar.stdout.close()
    if tar.wait():
        raise RuntimeError("tar of the changed files of %s failed" % tree_b)
    return each, together, len(changed)


class Workload:
    """One workload's server side (under srv/, served by one origin) and its node runs."""

    def __init__(self, bench, name, tree_a, tree_b, identity=True):
        self.bench, self.name, self.a, self.b, self.identity = bench, name, tree_a, tree_b, identity
        self.slug = "".join(c if c.isalnum() else "-" for c in name)
        self.dir = os.path.join(bench.work, "dist-" + self.slug)
        self.srv = os.path.join(self.dir, "srv")
        os.makedirs(self.srv)
        self.origin = None
        self.image = os.path.join(self.srv, "B.tar.zst")  # the whole image, as the agent takes it today
        self.ostree_b, self.ostree_left_out = tree_b, 0
        self.expected = manifest.build(tree_b, manifest.Excluder(()), skip_devices=False)[0]

    def path(self, *rel):
        return os.path.join(self.dir, *rel)

    # --- server sides, untimed ------------------------------------------------
    def prepare(self):
        """Each method's server side; one that fails leaves its method unavailable."""
        self.record, self.unavailable = {}, {}
        self._node_root()
        for methods, step in ((METHODS[:1], self._repository), (METHODS[1:2], self._whole_image),
                              (METHODS[2:3], self._ostree), (METHODS[3:4], self._casync),
                              (METHODS[4:], self._zsync)):
            try:
                step()
            except Exception as e:
                LOG.warning("%s: %s", methods[0], e)
                self.unavailable.update({m: "server side failed: %s" % _last_line(e) for m in methods})

    def _repository(self):
        repo = os.path.join(self.srv, "repo")
        for tree, image_id in ((self.a, "img-A"), (self.b, "img-B")):
            bench_mod._publish(tree, repo, image_id)
        with open(os.path.join(repo, "images", "img-B.json")) as f:
            self.record = json.load(f)

    def _whole_image(self):
        with open(self.image, "wb") as out:
            tar = subprocess.Popen(TAR + ["-cf", "-", "-C", self.b, "."], stdout=subprocess.PIPE)
            subprocess.run(["zstd", "-3", "-T0", "-q", "-c"], stdin=tar.stdout, stdout=out, check=True)
            tar.stdout.close()
            if tar.wait():
                raise RuntimeError("tar of %s exited %d" % (self.b, tar.returncode))
        # room for the image and its unpacked tree: the agent unpacks a tar there
        self.state_mb = max(4096, bench_mod._mb(self.b) + os.path.getsize(self.image) // MiB + 1024)

    def _node_root(self):
        """The agent's sandbox nodes start from a copy of this disk, image A."""
        self.root_a = self.path("A.ext4")
        bench_mod.sandbox.mkfs(self.root_a, bench_mod._mb(self.a) * 2, tree=self.a, label="cloudimg-rootfs")
        self.state_mb = 4096

    def _ostree(self):
        ostree = os.path.join(self.srv, "ostree")
        bench_mod.sh(["ostree", "init", "--mode=archive", "--repo=" + ostree])
        for ref, tree in (("a", self.a), ("b", self.b)):
            tree, left_out = self._without_specials(tree, ref)
            if ref == "b":
                self.ostree_b, self.ostree_left_out = tree, left_out
            bench_mod.sh(["ostree", "commit", "--repo=" + ostree, "--branch=" + ref, "--tree=dir=" + tree])

    def _casync(self):
        casync = os.path.join(self.srv, "casync")
        os.makedirs(casync)
        bench_mod.sh(["casync", "make", "--store=" + os.path.join(casync, "store"),
                      os.path.join(casync, "B.caidx"), self.b])

    def _zsync(self):
        zsync = os.path.join(self.srv, "zsync")
        os.makedirs(zsync)
        bench_mod.sh(TAR + ["-cf", self.path("A.tar"), "-C", self.a, "."])  # the node's, not served
        bench_mod.sh(TAR + ["-cf", os.path.join(zsync, "B.tar"), "-C", self.b, "."])
        bench_mod.sh(["zsyncmake", "-u", "B.tar", "-o", "B.tar.zsync", "B.tar"], cwd=zsync)

    def _without_specials(self, tree, label):
        """(tree, 0), or a copy of it without its devices, fifos and sockets and how
        many it had: ostree commits none (a deployed root gets /dev from devtmpfs)."""
        found = bench_mod.sh(["find", tree, "-xdev", "(", "-type", "b", "-o", "-type", "c", "-o",
                              "-type", "p", "-o", "-type", "s", ")", "-printf", "x"]).stdout
        if not found:
            return tree, 0
        copy = self.path("ostree-input-" + label)
        bench_mod.sh(bench_mod.RSYNC + ["--no-devices", "--no-specials", tree + "/", copy + "/"])
        return copy, len(found)

    def url(self, rel):
        return self.origin.url + "/" + rel

    # --- one timed node run per method ------------------------------------------
    def measure(self, method):
        """Result of one run: bytes and requests are what the origin served during it."""
        self.seen = len(self.origin.served())
        run = {"update-agent objects": self.objects, "update-agent whole image": self.whole_image,
               "ostree pull + checkout": self.ostree, "casync extract (seed A)": self.casync,
               "zsync (fetch + apply)": self.zsync}[method]
        result = Result(method, error=self.unavailable.get(method, ""))
        if result.error:
            return result
        try:
            run(result)
        except Exception as e:  # a method that cannot run is one row, not the end of the benchmark
            result.error = _last_line(e)
        served = self.origin.served()[self.seen:]
        result.bytes = sum(s.body_bytes for s in served)
        result.requests = len(served)
        return result

    def _fresh(self, name):
        out = self.path("node", name)
        shutil.rmtree(self.path("node"), ignore_errors=True)
        os.makedirs(os.path.dirname(out))
        return out

    def _check(self, result, out, tree_b=None):
        why = same_tree(out, tree_b or self.b)
        result.note = "content equals B" if not why else "WRONG: " + why

    def _agent_run(self, result, metadata):
        meta = self.path("meta.json")
        with open(meta, "w") as f:
            json.dump(metadata, f)
        node = self._node()
        try:
            env = dict(os.environ, PYTHONPATH=os.path.join(bench_mod.PROJECT, "agent"))
            self._in_service(node, meta)
            self.bench._cache("cold")
            result.wall, result.peak_mb, _ = run_child(
                bench_mod.AGENT + ["--root", node.root, "--metadata", meta, "apply"], env=env)
            took = json.loads(bench_mod._agent(node.root, meta, "history", "--json", "-n", "1").stdout)
            steps = took[-1].get("step_s", {})
            # the agent's own journal: how much of the wall time its steps and its sync were
            result.parts = {"its steps": sum(steps.values()), "its sync step": steps.get("sync", 0.0)}
            ok = bench_mod._matches(node.root, self.expected)
            result.note = "content equals B (the agent's kept paths aside)" if ok else "WRONG: content differs"
        finally:
            node.stop()

    def _in_service(self, node, meta):
        """The node as one in service is when its metadata changes: its manifest recorded
        (its last update did that) on a root unwritten since. A dry run records it; the
        image cache it filled is emptied, so the timed run fetches everything itself."""
        bench_mod._agent(node.root, meta, "--dry-run")
        images = os.path.join(node.root, "var/lib/update-agent/images")
        shutil.rmtree(images, ignore_errors=True)
        self.seen = len(self.origin.served())  # what the dry run fetched is not the update's

    def _node(self):
        """A sandbox node at A, as the bench's own, with room in its state volume for
        the whole image and its unpacked tree (a tar image is unpacked there)."""
        img = self.path("node.ext4")
        bench_mod.sh(["cp", "--sparse=always", self.root_a, img])
        return bench_mod.sandbox.SandboxNode(self.path("node-dir"), img).start(
            identity=self.identity, state_mb=self.state_mb)

    def objects(self, result):
        self._agent_run(result, {"image_id": "img-B", "update_agent": {
            "repo": self.url("repo"), "image_digest": self.record["manifest"]}})

    def whole_image(self, result):
        self._agent_run(result, {"image_id": "img-B", "update_agent": {
            "image_url": self.url("B.tar.zst"), "image_digest": bench_mod.sandbox.image_digest(self.image)}})

    def ostree(self, result):
        out = self._fresh("B")
        repo, current = self.path("node", "repo"), self.path("node", "A")
        # the node as ostree leaves it: A's objects in its repository, A checked out
        bench_mod.sh(["ostree", "init", "--mode=bare", "--repo=" + repo])
        bench_mod.sh(["ostree", "pull-local", "--repo=" + repo, os.path.join(self.srv, "ostree"), "a"])
        bench_mod.sh(["ostree", "checkout", "--repo=" + repo, "a", current])
        bench_mod.sh(["ostree", "remote", "add", "--repo=" + repo, "--no-gpg-verify", "origin",
                      self.url("ostree")])
        self.bench._cache("cold")
        pull, pull_mb, _ = run_child(["ostree", "pull", "--repo=" + repo, "origin", "b"])
        checkout, checkout_mb, _ = run_child(["ostree", "checkout", "--repo=" + repo, "origin:b", out])
        result.wall, result.peak_mb = pull + checkout, max(pull_mb, checkout_mb)
        result.parts = {"pull": pull, "checkout": checkout}
        self._check(result, out, self.ostree_b)
        if self.ostree_left_out:
            result.note += " (less its %d devices, fifos and sockets, which ostree does not store)" \
                % self.ostree_left_out

    def casync(self, result):
        out = self._fresh("B")
        seed = self.path("node", "A")
        bench_mod.sh(["cp", "-a", self.a, seed])  # the node's current tree
        self.bench._cache("cold")
        result.wall, result.peak_mb, _ = run_child([
            "casync", "extract", "--store=" + self.url("casync/store"), "--seed=" + seed,
            self.url("casync/B.caidx"), out])
        self._check(result, out)

    def zsync(self, result):
        out = self._fresh("B")
        node = os.path.dirname(out)
        shutil.copy(self.path("A.tar"), os.path.join(node, "A.tar"))  # the node's current image
        self.bench._cache("cold")
        fetch, fetch_mb, _ = run_child(["zsync", "-q", "-i", "A.tar", "-o", "B.tar",
                                        self.url("zsync/B.tar.zsync")], cwd=node)
        os.makedirs(out)
        apply, apply_mb, _ = run_child(TAR + ["-xpf", os.path.join(node, "B.tar"), "-C", out])
        result.wall, result.peak_mb = fetch + apply, max(fetch_mb, apply_mb)
        result.parts = {"fetch": fetch, "apply (tar -x)": apply}
        self._check(result, out)

    def rsync_quick_check(self):
        """Bare quick-check rsync of the whole tree B onto a copy of A (the apply's yardstick)."""
        node = self._fresh("A")
        bench_mod.sh(["cp", "-a", self.a, node])
        self.bench._cache("cold")
        return bench_mod.timed(lambda: bench_mod.sh(bench_mod.RSYNC + [self.b + "/", node + "/"]))


def run_workload(bench, name, tree_a, tree_b, identity=True):
    w = Workload(bench, name, tree_a, tree_b, identity)
    w.prepare()
    each, together, changed = lower_bound(tree_a, tree_b, w.dir)
    runs = {m: [] for m in METHODS}
    rsync = []
    with nginx_local.origin(w.srv, w.path("nginx")) as origin:
        w.origin = origin
        for _ in range(bench.reps):
            for method in METHODS:
                runs[method].append(w.measure(method))
                print("%-28s %-26s %s" % (name, method, _show(runs[method][-1])), flush=True)
            rsync.append(w.rsync_quick_check())
    results = [_median(rs) for rs in runs.values()]
    facts = {"lower_each": each, "lower_tar": together, "changed": changed,
             "image_bytes": sum(e.size for e in w.expected.values() if e.kind == "f"),
             "whole_image_bytes": os.path.getsize(w.image) if os.path.exists(w.image) else 0,
             "manifest_bytes": _repo_file(w, "manifest"), "index_bytes": _repo_file(w, "index"),
             "xattrs_bytes": _repo_file(w, "xattrs"), "delta_bytes": _repo_file(w, "delta_index"),
             "rsync_s": statistics.median(rsync)}
    bench.distribution.append((name, results, facts))
    bench.goals += goal_lines(name, results, facts, full_scale="150000" in name.replace(",", ""))
    shutil.rmtree(w.dir, ignore_errors=True)


def _last_line(error):
    text = str(error).strip()
    return text.splitlines()[-1][:300] if text else type(error).__name__


def _repo_file(w, kind):
    """The size of the record's manifest, index, delta index or xattrs file (0 if it
    has none)."""
    digest = w.record.get(kind)
    if not digest:
        return 0
    path = {"manifest": repo_format.manifest_path, "index": repo_format.index_path,
            "delta_index": repo_format.index_path,
            "xattrs": repo_format.xattrs_path}[kind](repo_format.hex_of(digest))
    return os.path.getsize(os.path.join(w.srv, "repo", path))


def _median(results):
    """The median run of a method (by wall time); its first error if any run failed."""
    failed = [r for r in results if r.error]
    if failed:
        return failed[0]
    ordered = sorted(results, key=lambda r: r.wall)
    return ordered[len(ordered) // 2]


def _show(r):
    if r.error:
        return "not available: " + r.error
    return "%.2f MB, %d requests, %.2f s, peak %.0f MB; %s" % (r.bytes / 1e6, r.requests, r.wall,
                                                               r.peak_mb, r.note)


def goal_lines(name, results, facts, full_scale):
    """The issue's goals for the objects method, each met or missed and why."""
    by = {r.method: r for r in results}
    obj, whole = by["update-agent objects"], by["update-agent whole image"]
    # the allowance is the manifest alone: the record, the index the node reads
    # (the delta index on a node one image behind) and the xattrs must fit in the 10%
    meta = facts["manifest_bytes"]
    share = facts["manifest_bytes"] / facts["image_bytes"] * 100
    lines = ["* %s, manifest: %.1f KB compressed, %.3f%% of the image's %.1f MB of files (goal <= 0.5%%): %s"
             % (name, facts["manifest_bytes"] / 1e3, share, facts["image_bytes"] / 1e6,
                "met" if share <= 0.5 else "MISSED")] if facts["manifest_bytes"] else []
    if obj.error:
        return lines + ["* %s, update-agent objects: not available (%s): its goals (bytes, requests, "
                        "memory, time) are not judged" % (name, obj.error)]
    bound = 1.1 * facts["lower_each"] + meta
    lines.append("* %s, bytes: %.2f MB fetched, goal <= 1.1 x %.2f MB (zstd -3 of the %d changed files) "
                 "+ %.2f MB (the manifest) = %.2f MB: %s"
                 % (name, obj.bytes / 1e6, facts["lower_each"] / 1e6, facts["changed"], meta / 1e6,
                    bound / 1e6, "met" if obj.bytes <= bound else "MISSED"))
    per_mib = obj.requests / max(obj.bytes / MiB, 1e-9)
    lines.append("* %s, requests: %d for %.2f MiB, %.2f per MiB (goal <= 1): %s"
                 % (name, obj.requests, obj.bytes / MiB, per_mib,
                    "met" if per_mib <= 1 else "MISSED (the record, manifest and index are requests "
                    "of their own: under a few MiB fetched they alone pass one per MiB)"))
    lines.append("* %s, node memory: peak %.0f MB (goal <= 256 MB): %s"
                 % (name, obj.peak_mb, "met" if obj.peak_mb <= 256 else "MISSED"))
    peers = [by[m] for m in PEERS if not by[m].error]
    beaten = [p.method for p in peers if p.wall <= obj.wall]
    if not whole.error:
        ratio = obj.wall / whole.wall
        lines.append("* %s, update time: %.2f s, %.2f x the whole-image path's %.2f s (goal <= 0.25), "
                     "and below every peer's: %s" % (
                         name, obj.wall, ratio, whole.wall,
                         "met" if ratio <= 0.25 and not beaten else "MISSED (%s)" % "; ".join(
                             ([] if ratio <= 0.25 else ["%.2f x the whole image" % ratio]) +
                             ["%s took %.2f s" % (m, by[m].wall) for m in beaten])))
    exact = not obj.note.startswith("WRONG")
    lines.append("* %s, apply %.2f s (fetch included; its sync step %.2f s) against bare quick-check "
                 "rsync of the whole tree %.2f s, content %s: %s" % (
                     name, obj.wall, obj.parts.get("its sync step", 0.0), facts["rsync_s"],
                     "exact" if exact else "WRONG",
                     "not judged (the goal is for 150,000 files)" if not full_scale else
                     "met" if exact and obj.wall <= facts["rsync_s"] else "MISSED"))
    return lines


def report_lines(bench):
    """The report's section: one table row per workload and method."""
    if not bench.distribution:
        return []
    lines = ["", "## Distribution, side by side", "",
             "Over HTTP from one nginx on 127.0.0.1; the page cache dropped before each node run. "
             "Bytes are response bodies the origin sent; peak is the RSS of the node's largest process.",
             "", "| workload | method | MB fetched | requests | wall (s) | peak (MB) | note |",
             "|---|---|---|---|---|---|---|"]
    for name, results, facts in bench.distribution:
        for r in results:
            if r.error:
                lines.append("| %s | %s | - | - | - | - | not available: %s |" % (name, r.method, r.error))
                continue
            split = ", ".join("%s %.2f s" % (k, v) for k, v in r.parts.items())
            lines.append("| %s | %s | %.3f | %d | %.3f | %.0f | %s%s |" % (
                name, r.method, r.bytes / 1e6, r.requests, r.wall, r.peak_mb, r.note,
                "; " + split if split else ""))
        lines.append("| %s | lower bound: zstd -3 of each changed file | %.3f | - | - | - | %d files; "
                     "as one tar.zst: %.3f MB |" % (name, facts["lower_each"] / 1e6, facts["changed"],
                                                   facts["lower_tar"] / 1e6))
        lines.append("| %s | rsync quick-check, local, whole tree | - | - | %.3f | - | the apply's yardstick |"
                     % (name, facts["rsync_s"]))
        lines.append("| %s | sizes | - | - | - | - | B's files %.1f MB, B as a tar.zst %.1f MB; manifest "
                     "%.1f KB, index %.1f KB, delta index %.1f KB, xattrs %.1f KB |" % (
                         name, facts["image_bytes"] / 1e6, facts["whole_image_bytes"] / 1e6,
                         facts["manifest_bytes"] / 1e3, facts["index_bytes"] / 1e3,
                         facts.get("delta_bytes", 0) / 1e3, facts["xattrs_bytes"] / 1e3))
    return lines


def plot(bench, directory, plt):
    """bench-distribution-<workload>.png: bytes and time per method."""
    from matplotlib import ticker
    for name, results, facts in bench.distribution:
        ran = [r for r in results if not r.error]
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
        labels = [r.method for r in ran] + ["lower bound (zstd)"]
        bars = left.barh(labels, [r.bytes / 1e6 for r in ran] + [facts["lower_each"] / 1e6])
        left.bar_label(bars, fmt="%.1f", padding=2)
        left.set_xscale("log")  # a whole image is thousands of times the changed files
        left.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: "%g" % v))
        left.xaxis.set_minor_formatter(ticker.NullFormatter())
        left.margins(x=0.15)
        left.set_xlabel("MB fetched (log scale)")
        bars = right.barh(labels, [r.wall for r in ran] + [0])
        right.bar_label(bars, labels=["%.1f" % r.wall for r in ran] + [""], padding=2)
        right.margins(x=0.15)
        right.set_xlabel("seconds to the node at B")
        fig.suptitle(name)
        fig.tight_layout()
        fig.savefig(os.path.join(directory, "bench-distribution-%s.png" % _slug(name)))
        plt.close(fig)


def _slug(name):
    return name.replace(" ", "-").replace("%", "pct").replace(">", "").replace(",", "")


def run_part(bench, quick, synthetic=True):
    """The synthetic workload (1% changed), unless not asked for, and, unless quick,
    Debian A to B."""
    if synthetic:
        files, size = (3000, 60 << 20) if quick else (150000, 3 << 30)
        base = os.path.join(bench.work, "dist-syn")
        a, b = bench_mod.synthetic(base, files, size, 1)
        try:
            run_workload(bench, "%d files, 1%% changed" % files, a, b)
        finally:
            shutil.rmtree(base, ignore_errors=True)
    if not quick:
        import debian_roots
        ra, rb = debian_roots.node_roots(os.path.join(bench.work, "dist-debian"))
        run_workload(bench, "debian A -> B", ra, rb, identity=False)
