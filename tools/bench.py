"""Benchmarks: measure and report, side by side, never assert.

Apply and plan speed against bare rsync (quick-check and --checksum) and a bare
metadata walk, on synthetic roots (1% and 10% changed, half of the changes at
the same size and mtime) and a no-op; the daemon's idle footprint and its
detection latency; a fleet's load on a metadata server (1,000 pollers, with and
without splay and conditional GETs), reboot-slot throughput on a real etcd, and
a rollout of 1,000 simulated nodes through the real rollout gate on etcd, and
`update-agent publish` of the synthetic image into an object repository (time, peak memory),
and the distribution side by side (tools/distribution_bench.py: the object repository,
the whole image, ostree, casync and zsync, over HTTP from one nginx).
Runs alternate between methods, each repeated, medians reported, with a cold
(page cache dropped) and a warm cache. Every apply is checked for content
equality with the image: a fast wrong answer does not count.

    tools/bench [--quick] [--parts P,...]   (as root; writes docs/benchmarks.md and
                                             docs/bench-*.png)

The full run takes hours (each synthetic workload about 40 min here: every
apply starts from a fresh copy of a 3 GB root); --parts runs some of it:
sync-1, noop, sync-10, debian, daemon, fleet, etcd, rollout, publish, distribution
(distribution-debian: its Debian workload alone). The report is rewritten
after each part, so an interrupted run keeps what it measured.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)
sys.path[:0] = [HERE, os.path.join(PROJECT, "agent")]

import sandbox  # noqa: E402
from update_agent.decide import accounts  # noqa: E402
from update_agent import config  # noqa: E402
from update_agent.node import manifest  # noqa: E402

AGENT = [sys.executable, "-m", "update_agent"]
RSYNC = ["rsync", "-aHAX", "--numeric-ids", "--delete", "--one-file-system"]


def sh(argv, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if r.returncode:
        # what failed and why, not only an exit status
        raise RuntimeError("%s exited %d: %s" % (" ".join(argv[-4:]), r.returncode,
                                                 (r.stderr or r.stdout).strip()[-1500:]))
    return r


def drop_caches():
    sh(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def timed(fn):
    t = time.monotonic()
    fn()
    return time.monotonic() - t


# --- workloads -----------------------------------------------------------
def synthetic(base, files, total_bytes, changed_pct, seed=1):
    """Trees A and B: mixed sizes; changed_pct of B's files differ from A's,
    half of those at the same size and (clamped) mtime."""
    rng = random.Random(seed)
    a, b = os.path.join(base, "A"), os.path.join(base, "B")
    sizes = [max(1, int(rng.lognormvariate(8, 1.6))) for _ in range(files)]
    scale = total_bytes / sum(sizes)
    sizes = [max(1, int(s * scale)) for s in sizes]
    for tree, variant in ((a, "A"), (b, "B")):
        sandbox.build_node_tree(tree, "img-" + variant, os.uname().release, "A")
    changed = set(rng.sample(range(files), int(files * changed_pct / 100)))
    block = os.urandom(1 << 20)
    for i, size in enumerate(sizes):
        rel = "usr/share/bulk/d%03d/f%06d" % (i % 500, i)
        data = (block * (size // len(block) + 1))[:size]
        for tree in (a, b):
            os.makedirs(os.path.dirname(os.path.join(tree, rel)), exist_ok=True)
            body = data
            if tree == b and i in changed:
                flip = bytes([data[0] ^ 0xFF])
                body = (flip + data[1:]) if i % 2 else data + b"more"
            with open(os.path.join(tree, rel), "wb") as f:
                f.write(body)
    with open(os.path.join(b, "etc/image_id"), "w") as f:
        f.write("img-B\n")
    for tree in (a, b):
        sandbox._clamp(tree)
    return a, b


class Bench:
    def __init__(self, work, reps):
        self.work, self.reps = work, reps
        self.rows = []      # (workload, method, cache, median s, note)
        self.parts = []     # what --parts asked for, if not everything
        self.goals = []     # lines for "Against the targets" from parts that judge themselves
        self.distribution = []  # (workload, results, facts) from distribution_bench

    def add(self, workload, method, cache, samples, note=""):
        self.rows.append((workload, method, cache, statistics.median(samples), note))
        print("%-24s %-30s %-5s %9.3f  %s" % (workload, method, cache, statistics.median(samples), note),
              flush=True)

    # --- apply and plan ----------------------------------------------------
    def sync_workload(self, name, tree_a, tree_b, identity=True):
        """identity: give each node the sandbox's own users and host keys (a Debian
        root has an 'operator' group of its own, which they would clash with)."""
        name_shown, name = name, "".join(c if c.isalnum() else "-" for c in name)
        image_b = os.path.join(self.work, name + "-B.ext4")
        sandbox.mkfs(image_b, _mb(tree_b), tree=tree_b)
        root_a = os.path.join(self.work, name + "-A.ext4")
        sandbox.mkfs(root_a, _mb(tree_a) * 2, tree=tree_a, label="cloudimg-rootfs")
        digest = sandbox.image_digest(image_b)
        meta = os.path.join(self.work, name + ".json")
        with open(meta, "w") as f:
            # offered in the directory of the node each run brings up (self._node)
            url = sandbox.offer(os.path.join(self.work, name + "-node"), image_b)
            json.dump({"image_id": "img-B", "update_agent": {"image_url": url,
                                                             "image_digest": digest}}, f)
        expected = manifest.build(tree_b, manifest.Excluder(()), skip_devices=False)[0]
        for cache in ("cold", "warm"):
            samples = {m: [] for m in ("update-agent apply", "rsync quick-check",
                                       "rsync --checksum", "update-agent --dry-run",
                                       "rsync -n --itemize", "find walk (A+B)", "apply total",
                                       "apply: its sync step", "apply: all its steps")}
            correct = {m: True for m in samples}
            for rep in range(self.reps):
                for method in ("update-agent apply", "rsync quick-check", "rsync --checksum"):
                    node = self._node(name, root_a, identity)
                    try:
                        if method == "update-agent apply":
                            _agent(node.root, meta, "--dry-run")  # stage: download excluded
                            self._cache(cache)
                            t0 = time.monotonic()
                            _agent(node.root, meta, "apply")
                            samples["apply total"].append(time.monotonic() - t0)
                            samples[method].append(samples["apply total"][-1])
                            # where the time went, as the agent journalled it
                            took = json.loads(_agent(node.root, meta, "history", "--json", "-n", "1").stdout)
                            took = took[-1]["step_s"]
                            samples["apply: its sync step"].append(took["sync"])
                            samples["apply: all its steps"].append(sum(took.values()))
                        else:
                            sh(["mount", "-o", "remount,rw", node.root])  # rsync has no remounts
                            self._cache(cache)
                            extra = ["--checksum"] if "checksum" in method else []
                            samples[method].append(timed(lambda: _rsync_onto(node.root, tree_b, extra)))
                        correct[method] &= _matches(node.root, expected)
                    finally:
                        node.stop()
                node = self._node(name, root_a, identity)
                try:
                    _agent(node.root, meta, "--dry-run")  # cache the image's manifest
                    for method, fn in (
                            ("update-agent --dry-run", lambda: _agent(node.root, meta, "--dry-run")),
                            ("rsync -n --itemize", lambda: sh(RSYNC + ["-n", "-i", tree_b + "/",
                                                                      node.root + "/"])),
                            ("find walk (A+B)", lambda: (sh(["find", node.root, "-xdev", "-printf", "%p %s %T@\n"]),
                                                         sh(["find", tree_b, "-xdev", "-printf", "%p %s %T@\n"])))):
                        self._cache(cache)
                        samples[method].append(timed(fn))
                finally:
                    node.stop()
            for method, values in samples.items():
                note = ""
                if method in correct and method != "apply total" and method in (
                        "update-agent apply", "rsync quick-check", "rsync --checksum"):
                    note = "content equals the image" if correct[method] else "WRONG: content differs"
                self.add(name_shown, method, cache, values, note)

    def _node(self, name, root_a, identity):
        img = os.path.join(self.work, name + "-node.ext4")
        sh(["cp", "--sparse=always", root_a, img])
        return sandbox.SandboxNode(os.path.join(self.work, name + "-node"), img).start(
            identity=identity, state_mb=4096)

    def _cache(self, cache):
        # the node was just copied: its write-back must not run during the timed run
        sh(["sync"])
        if cache == "cold":
            drop_caches()


def _mb(tree):
    used = int(sh(["du", "-sm", tree]).stdout.split()[0])
    return max(64, used * 2 + 64)


def _agent(root, meta, *args):
    env = dict(os.environ, PYTHONPATH=os.path.join(PROJECT, "agent"))
    return sh(AGENT + ["--root", root, "--metadata", meta] + list(args), env=env)


def _rsync_onto(root, tree, extra):
    # the same exclusions the agent keeps: its preserved paths, the account files it
    # merges, and the sandbox node's own mounts
    kept = list(config.DEFAULT_PRESERVE) + ["/" + rel for rel in accounts.FILES] + \
        ["/mnt/state", "/var/lib/update-agent"]
    sh(RSYNC + extra + ["--exclude=" + p for p in kept] + [tree + "/", root + "/"])


def _matches(root, expected):
    got = manifest.build(root, manifest.Excluder(()), skip_devices=True)[0]
    skip = ("etc/", "home", "root", "var/log", "run", "tmp", "var/tmp", "mnt", "var/lib/update-agent",
            "proc", "sys", "dev", "lost+found", ".update-agent-pinned", ".update-agent-kept")
    keep = lambda r: not r.startswith(skip)  # noqa: E731
    want = {r: e.digest for r, e in expected.items() if keep(r) and e.kind == "f"}
    have = {r: e.digest for r, e in got.items() if keep(r) and e.kind == "f"}
    return want == have


# --- daemon ----------------------------------------------------------------
def daemon_bench(bench, seconds, changes):
    import psutil
    sys.path.insert(0, os.path.join(PROJECT, "tests", "integration"))
    import daemon_helpers
    import world
    os.makedirs(os.path.join(bench.work, "daemon"))
    os.makedirs(os.path.join(bench.work, "daemon-node"))
    w = world.World(os.path.join(bench.work, "daemon"))
    node = w.node(os.path.join(bench.work, "daemon-node"), occ_mount=True, occ_cache={
        "heat_local.json": {"image_id": "img-A", "update_agent": {"image_url": "file:///x"}}})
    notify = daemon_helpers.NotifySocket(os.path.join(bench.work, "notify"))
    conf = os.path.join(bench.work, "daemon.conf")
    with open(conf, "w") as f:
        f.write("[daemon]\npoll_interval = 30\nsplay = 0\n")
    proc = daemon_helpers.start_daemon(node.root, conf, notify.path)
    try:
        notify.wait_for(lambda m: m.get("READY") == "1")
        p = psutil.Process(proc.pid)
        time.sleep(2)
        cpu0, t0 = sum(p.cpu_times()[:2]), time.monotonic()
        rss = []
        while time.monotonic() - t0 < seconds:
            rss.append(p.memory_info().rss)
            time.sleep(1)
        cpu = (sum(p.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0) * 100
        bench.add("daemon idle", "RSS (MB)", "-", [r / 2**20 for r in rss],
                  "over %d s" % seconds)
        bench.add("daemon idle", "CPU (%)", "-", [cpu], "over %d s" % seconds)
        latencies = []
        for i in range(changes):
            seen = len(notify.messages)
            node.write_occ_cache({"heat_local.json": {"image_id": "img-A", "update_agent": {
                "image_url": "file:///x", "note": str(i)}}})
            written = os.stat(os.path.join(node.root, "var/lib/os-collect-config/heat_local.json")).st_mtime
            t = _wait(notify, seen, lambda m: m.get("STATUS", "").startswith("checking img-A"))
            latencies.append(t - written)
            time.sleep(0.2)
        bench.add("daemon", "detection latency (s)", "-", latencies,
                  "%d cache changes; os-collect-config polls every 30 s" % changes)
    finally:
        daemon_helpers.stop_daemon(proc)
        notify.close()
        node.stop()


def _wait(notify, seen, predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t, m in notify.messages[seen:]:
            if predicate(m):
                return t
        time.sleep(0.002)
    raise RuntimeError("no detection")


# --- fleet -----------------------------------------------------------------
def fleet_bench(bench, pollers, seconds, interval):
    import http.server
    from update_agent.sources.metadata_url import UrlSource
    body = json.dumps({"image_id": "img-A", "update_agent": {"image_url": "http://x/" + "p" * 2000}}).encode()
    counts, sent = {}, [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            second = int(time.monotonic())
            counts[second] = counts.get(second, 0) + 1
            if self.headers.get("If-None-Match") == '"v1"':
                self.send_response(304)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", '"v1"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            sent[0] += len(body)

        def log_message(self, *a):
            pass
    results = {}
    for label, splay, conditional in (("lockstep, no splay", 0, True),
                                      ("splay = interval", interval, True),
                                      ("splay, no conditional GET", interval, False)):
        counts.clear()
        sent[0] = 0
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.request_queue_size = 1024
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = "http://127.0.0.1:%d/" % server.server_address[1]
        stop = time.monotonic() + seconds
        rng = random.Random(7)

        def poller(seed):
            src, r = UrlSource(url, timeout=10), random.Random(seed)
            # nodes started together; the daemon splays its first poll as well
            nxt = time.monotonic() + r.uniform(0, splay)
            while True:
                time.sleep(max(0.0, nxt - time.monotonic()))
                if time.monotonic() >= stop:
                    return
                try:
                    src.poll()
                except Exception:
                    pass
                if not conditional:
                    src.etag = src.last_modified = None
                nxt += interval + r.uniform(0, splay)
        threads = [threading.Thread(target=poller, args=(rng.random(),), daemon=True)
                   for _ in range(pollers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 30)
        server.shutdown()
        server.server_close()
        per_second = list(counts.values()) or [0]
        total = sum(per_second)
        mean = total / seconds
        results[label] = (max(per_second), mean, sent[0])
        bench.add("fleet: %d pollers" % pollers, label + ": peak req/s", "-", [max(per_second)],
                  "mean %.1f req/s over %d s; %.1f MB of bodies sent"
                  % (mean, seconds, sent[0] / 1e6))
    return results


def etcd_bench(bench, nodes, slots, hold):
    import etcd_local
    from update_agent.coordination import RebootSlots, stores
    data = tempfile.mkdtemp(prefix="etcd-", dir="/tmp")
    with etcd_local.etcd(data + "/d") as url:
        store = stores.for_url(url)
        group = "bench-%d" % time.time_ns()

        def node(i):
            n = RebootSlots(store, group, slots, "n%d" % i, time.time)
            while not n.take()[0]:
                time.sleep(0.005)
            time.sleep(hold)
            n.release()
        t0 = time.monotonic()
        threads = [threading.Thread(target=node, args=(i,)) for i in range(nodes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - t0
        ideal = nodes / slots * hold
        bench.add("coordination (etcd)", "%d nodes through %d slots (s)" % (nodes, slots), "-", [took],
                  "%.0f nodes/min with a %.1f s 'reboot' (ideal %.0f/min)"
                  % (nodes / took * 60, hold, nodes / ideal * 60))
    shutil.rmtree(data, ignore_errors=True)


def rollout_bench(bench, nodes, procs, max_parallel, polls, limit, watch_timeout=60):
    """nodes through one stage of max_parallel on a real etcd: waiting on the watch
    (as the daemon does on etcd), then polling once per poll interval (as on Redis
    and ZooKeeper); then a watching run where one node fails (halt_after 1) and
    one member stops beating."""
    import etcd_local
    import rollout_bench as rb
    data = tempfile.mkdtemp(prefix="etcd-", dir="/tmp")
    runs = {}
    with etcd_local.etcd(data + "/d") as url:
        runs["watch"] = rb.one_run(url, data, nodes, procs, max_parallel, watch_timeout, limit,
                                   watch=True)
        for poll in polls:
            runs["poll %g s" % poll] = rb.one_run(url, data, nodes, procs, max_parallel, poll, limit)
        runs["halt (watch)"] = rb.one_run(url, data, nodes, procs, max_parallel, watch_timeout, 60,
                                          fail_after=10, dead=True, watch=True)
    shutil.rmtree(data, ignore_errors=True)
    workload = "rollout: %d nodes, 1 stage of %d" % (nodes, max_parallel)
    for label, r in runs.items():
        if "halt" in label:
            bench.add(workload, "%s: last start after the failure (s)" % label, "-",
                      [max(0.0, r["halt_latency"] or 0)], "%d halted" % r["kinds"].get("halted", 0))
            bench.add(workload, "dead member dropped after (s)", "-", [r["dead_drop_s"]],
                      "member ttl %d s" % rb.MEMBER_TTL)
            continue
        bench.add(workload, "%s: total (s)" % label, "-", [r["total_s"]],
                  "ideal %.0f s; %d of %d done" % (nodes / max_parallel * rb.STEP_S, r["done"], nodes))
        bench.add(workload, "%s: req/s per waiting node" % label, "-", [r["per_waiting_node"]],
                  "%d engine calls in all" % r["requests"])
        bench.add(workload, "%s: most started at once" % label, "-",
                  [max(r["max_started_sampled"], r["max_running"])], "limit %d" % max_parallel)
    bench.goals += rb.goal_lines(runs, nodes, max_parallel)
    print(json.dumps(runs, indent=1), flush=True)


# --- publishing into an object repository ------------------------------------
PUBLISH_GOALS = {"A": (120, 512), "B": (60, 512)}  # (seconds, peak MB) at 150,000 files, 3 GB


def _publish(tree, repo, image_id):
    """One `update-agent publish` process: (seconds, peak RSS in MB, its --json)."""
    env = dict(os.environ, PYTHONPATH=os.path.join(PROJECT, "agent"))
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.monotonic()
        proc = subprocess.Popen(AGENT + ["publish", tree, repo, "--image-id", image_id, "--json"],
                                env=env, stdout=out, stderr=err)
        # wait4, not wait: the peak RSS of the publish (or of its largest zstd), not ours
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - t
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise RuntimeError("publish %s exited %d: %s" % (tree, proc.returncode, err.read().strip()[-1500:]))
        return seconds, usage.ru_maxrss / 1024.0, json.loads(out.read())


def publish_bench(bench, files, tree_a, tree_b):
    """Publish A into an empty repository, then B (1% changed), then B again."""
    workload = "publish %d files" % files
    repo = os.path.join(bench.work, "repo")
    shutil.rmtree(repo, ignore_errors=True)
    got = {}
    for label, tree, image_id in (("A", tree_a, "img-A"), ("B", tree_b, "img-B"),
                                  ("B again", tree_b, "img-B")):
        drop_caches()
        seconds, peak, result = _publish(tree, repo, image_id)
        got[label] = (seconds, peak)
        note = ("%d new objects, %d new packs, %.1f MB written" % (
            result["new_objects"], result["new_packs"], result["written_bytes"] / 1e6)
            if not result["already"] else "already published")
        bench.add(workload, "publish %s (cold)" % label, "cold", [seconds], note)
        bench.add(workload, "publish %s: peak RSS (MB)" % label, "cold", [peak])
    for label, (seconds_goal, mb_goal) in PUBLISH_GOALS.items():
        seconds, peak = got[label]
        bench.goals.append("* %s, publish %s: %.1f s (goal <= %d s at 150,000 files, 3 GB), "
                           "peak %.0f MB (goal <= %d MB): %s" % (
                               workload, label, seconds, seconds_goal, peak, mb_goal,
                               "not judged (the goals are for 150,000 files)" if files < 150000 else
                               "met" if seconds <= seconds_goal and peak <= mb_goal else "MISSED"))
    shutil.rmtree(repo, ignore_errors=True)


# --- report ----------------------------------------------------------------
def report(bench, quick, path):
    args = (" --quick" if quick else "") + (" --parts " + ",".join(bench.parts) if bench.parts else "") \
        + (" --reps %d" % bench.reps if bench.reps != (1 if quick else 5) else "")
    lines = ["# Benchmarks", "",
             "Written by `tools/bench%s` on this machine (2 cores; a VM's virtual disk). "
             "Medians of %d runs, methods alternated; `cold` drops the page cache before each run. "
             "Targets are reported, never asserted." % (args, bench.reps), "",
             "| workload | method | cache | median (seconds, unless the method says) | note |",
             "|---|---|---|---|---|"]
    for w, m, c, v, note in bench.rows:
        lines.append("| %s | %s | %s | %.3f | %s |" % (w, m, c, v, note))
    if bench.distribution:
        import distribution_bench
        lines += distribution_bench.report_lines(bench)
    lines += ["", "## Against the targets", ""]
    by = {(w, m, c): v for w, m, c, v, _ in bench.rows}
    for w in sorted({r[0] for r in bench.rows if r[1] == "update-agent apply"}):
        for c in ("cold", "warm"):
            a, r, n, walk = (by.get((w, "update-agent apply", c)), by.get((w, "rsync quick-check", c)),
                             by.get((w, "rsync -n --itemize", c)), by.get((w, "find walk (A+B)", c)))
            d = by.get((w, "update-agent --dry-run", c))
            if a and r:
                lines.append("* %s, %s: apply %.2f x bare rsync (target <= 1.10); dry-run %.2f x "
                             "rsync -n (target <= 1.5), %.2f x the metadata walk (stretch <= 3)"
                             % (w, c, a / r, d / n if n else 0, d / walk if walk else 0))
                steps, synced = by.get((w, "apply: all its steps", c)), by.get((w, "apply: its sync step", c))
                if steps is not None:
                    lines.append("  * of the apply's %.2f s: %.2f s in its steps (the sync %.2f s), "
                                 "%.2f s before and after them (start-up, planning, health check)"
                                 % (a, steps, synced, a - steps))
    for method, target, unit in (("RSS (MB)", 30, " MB"), ("CPU (%)", 0.1, "%"),
                                 ("detection latency (s)", 1, " s")):
        got = [v for w, m, c, v, _ in bench.rows if m == method]
        if got:
            lines.append("* daemon %s: %.3f%s (target <= %s%s): %s"
                         % (method.split(" (")[0], got[0], unit, target, unit,
                            "met" if got[0] <= target else "MISSED"))
    lines += bench.goals
    if any(r[1] == "update-agent apply" for r in bench.rows):
        lines += ["", "Why a target is missed, where it is: the agent's apply is a whole process "
                  "(interpreter start, the plan's walk of the node and load of the image's manifest, "
                  "hooks, two remounts, a flush and a health check) where bare rsync is one copy; "
                  "the breakdown under each workload says how much of it is the sync. The content "
                  "check above is what rsync's quick-check cannot pass where files changed at the "
                  "same size and mtime."]
    lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        for w in sorted({r[0] for r in bench.rows if "changed" in r[0] or "no-op" in r[0]}):
            rows = [r for r in bench.rows if r[0] == w and r[1] != "apply total"
                    and not r[1].startswith("apply: ")]
            fig, ax = plt.subplots(figsize=(8, 3.5))
            labels = ["%s (%s)" % (r[1], r[2]) for r in rows]
            ax.barh(labels, [r[3] for r in rows])
            ax.set_xlabel("seconds (median)")
            ax.set_title(w)
            fig.tight_layout()
            fig.savefig(os.path.join(os.path.dirname(path), "bench-%s.png" % w.replace(" ", "-").replace("%", "pct")))
            plt.close(fig)
        if bench.distribution:
            import distribution_bench
            distribution_bench.plot(bench, os.path.dirname(path), plt)
    except ImportError:
        print("matplotlib is not installed: no plots")


PARTS = ("sync-1", "noop", "sync-10", "debian", "daemon", "fleet", "etcd", "rollout", "publish",
         "distribution", "distribution-debian")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small workloads, short runs (< 3 min)")
    p.add_argument("--out", default=os.path.join(PROJECT, "docs", "benchmarks.md"))
    p.add_argument("--parts", default=",".join(PARTS),
                   help="comma-separated, of: %s (default: all; --quick skips debian)" % ", ".join(PARTS))
    p.add_argument("--reps", type=int, default=None,
                   help="runs per measurement, the median reported (default: 5; 1 with --quick)")
    args = p.parse_args()
    if args.reps is not None and args.reps < 1:
        sys.exit("bench: --reps %d: give at least 1" % args.reps)
    parts = [x for x in args.parts.split(",") if x]
    unknown = [x for x in parts if x not in PARTS]
    if unknown:
        sys.exit("bench: unknown part %r (parts: %s)" % (unknown[0], ", ".join(PARTS)))
    if os.geteuid() != 0:
        sys.exit("bench: run as root (it loop-mounts sandbox nodes and drops the page cache)")
    work = tempfile.mkdtemp(prefix="bench-", dir="/var/tmp")
    quick = args.quick
    bench = Bench(work, reps=args.reps or (1 if quick else 5))
    bench.parts = parts if set(parts) != set(PARTS) else []
    try:
        files, size = (3000, 60 << 20) if quick else (150000, 3 << 30)
        for pct in (1, 10):
            wanted = [x for x in ("sync-%d" % pct, "noop" if pct == 1 else None,
                                  "publish" if pct == 1 else None) if x in parts]
            if not wanted or (quick and pct == 10):
                continue
            base = os.path.join(work, "syn%d" % pct)
            a, b = synthetic(base, files, size, pct)
            if "sync-%d" % pct in wanted:
                bench.sync_workload("%d files, %d%% changed" % (files, pct), a, b)
                report(bench, quick, args.out)
            if "noop" in wanted:
                bench.sync_workload("%d files, no-op" % files, a, a)
                report(bench, quick, args.out)
            if "publish" in wanted:
                publish_bench(bench, files, a, b)
                report(bench, quick, args.out)
            shutil.rmtree(base, ignore_errors=True)
        if "debian" in parts and not quick:
            import debian_roots
            ra, rb = debian_roots.node_roots(os.path.join(work, "debian"))
            bench.sync_workload("debian A -> B", ra, rb, identity=False)
            report(bench, quick, args.out)
        if "distribution" in parts or "distribution-debian" in parts:
            import distribution_bench
            distribution_bench.run_part(bench, quick, synthetic="distribution" in parts)
            report(bench, quick, args.out)
        if "daemon" in parts:
            daemon_bench(bench, seconds=15 if quick else 600, changes=5 if quick else 20)
            report(bench, quick, args.out)
        if "fleet" in parts:
            fleet_bench(bench, pollers=200 if quick else 1000, seconds=20 if quick else 60,
                        interval=5 if quick else 30)
            report(bench, quick, args.out)
        if "etcd" in parts:
            etcd_bench(bench, nodes=10 if quick else 50, slots=2, hold=0.2 if quick else 1.0)
            report(bench, quick, args.out)
        if "rollout" in parts:
            rollout_bench(bench, nodes=200 if quick else 1000, procs=4, max_parallel=10 if quick else 50,
                          polls=(10,), limit=120 if quick else 180)
            report(bench, quick, args.out)
        print("written: %s" % args.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
