"""Rollouts at scale: many simulated nodes through one stage, on the real
coordination code (update.rollout.Gate and rollout.run over FleetRecords on a
real etcd). Only the node's update is a stand-in: it sleeps, then succeeds.

Nodes are threads, a few processes of them (one etcd client per process);
each loops like the daemon: rollout.run(), and on WAITING either sleeps on the
watch of its wake key until a node whose step ended wakes it (or the watch
times out), or, polling, sleeps the poll interval; either way it beats its
member record every member_ttl / 3. Every store call a
node makes is counted, so the engine's load per waiting node is measured, not
estimated. Used by tools/bench.py (part "rollout"); never by the test suite.
"""

import collections
import json
import multiprocessing
import os
import random
import threading
import time

GROUP = "compute"
STEP_S = 2.0          # the stand-in update's length
MEMBER_TTL = 30
BEATERS = 8  # heartbeat threads per process of nodes
OLD = "img-A"
STORE_CALLS = ("get", "swap", "put", "children", "delete", "keep", "watch")


class Counted:
    """A store whose calls are counted, in all and per thread (one thread: one node)."""

    def __init__(self, store):
        self.store, self.errors, self.url = store, store.errors, store.url
        self.lock = threading.Lock()
        self.total, self.by_thread = 0, collections.Counter()

    def connected(self):
        import contextlib
        return contextlib.nullcontext(self)

    def _count(self):
        with self.lock:
            self.total += 1
            self.by_thread[threading.get_ident()] += 1

    def mine(self):
        """How many calls this thread made."""
        with self.lock:
            return self.by_thread[threading.get_ident()]

    def __getattr__(self, name):
        found = getattr(self.store, name)
        if name not in STORE_CALLS:
            return found

        def counted(*args, **kw):
            self._count()
            return found(*args, **kw)
        return counted


def max_overlap(intervals):
    """The most (start, end) intervals open at one instant (an end before a start at a tie)."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def per_waiting_node(requests, waiting_s):
    """Requests per second per waiting node, from their totals over all nodes."""
    return requests / waiting_s if waiting_s > 0 else 0.0


# --- one process of simulated nodes ------------------------------------------
def _store(url, threads):
    import requests
    from update_agent.coordination import stores
    store = stores.for_url(url, timeout=30)
    # one client shared by every node thread of the process: enough pooled connections
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=threads + 10)
    store.client.session.mount("http://", adapter)
    return Counted(store)


def simulate(url, names, conf, out):
    """Run the nodes names as threads: each registers, then waits for the go file
    (start_at, until, fail_at), then updates; until each is done or halted, or until
    passes. Write what happened to out (JSON)."""
    from update_agent.coordination.rollouts import FleetRecords
    from update_agent.coordination.stores import Watched
    from update_agent.decide.rollout import policy as policies
    from update_agent.decide.rollout.stages import NextKind
    from update_agent.errors import AgentError
    from update_agent.state.states import Result
    from update_agent.update import rollout
    from update_agent.update.agent import Outcome

    new = conf["new"]
    store = _store(url, len(names))
    records = FleetRecords(store, time.time)
    policy = policies.parse(conf["policy"])
    nodes, failed_once, lock, go = {}, [], threading.Lock(), threading.Event()

    class TimedGate(rollout.Gate):
        def finish(self, turn, ok, message=""):
            if not ok:
                nodes[self.node]["halt_at"] = time.time()  # before the swap: conservative
            super().finish(turn, ok, message)

    def node(name):
        # waited_from / waited_to: the end of the node's first look and the start of its
        # last (the one that granted its step), as (time, calls so far): what lies
        # between is the cost of waiting: beats, watches or polls, and looks that lost
        me = nodes[name] = {"begin": 0, "start": 0, "end": 0, "requests_waiting": 0, "end_kind": "",
                            "waited_from": None, "waited_to": None, "beats": [],
                            "errors": 0, "halt_at": 0}
        gate = gates[name] = TimedGate(records, policy, name, GROUP, time.time, MEMBER_TTL,
                                       reboot_ttl=600)

        def update_once(turn):
            if turn is None:
                return Outcome(new, Result.NOOP)
            me["start"], me["requests_waiting"] = time.time(), store.mine()
            time.sleep(STEP_S)
            me["end"] = time.time()
            with lock:
                fail = conf["fail_at"] and me["start"] >= conf["fail_at"] and not failed_once
                failed_once.extend([name] if fail else [])
            if fail:
                return Outcome(new, Result.FAILED, object(), "stand-in failure", 1)
            return Outcome(new, Result.SUCCESS, object())

        def not_yet(why):
            return Outcome(new, Result.WAITING if why.kind == NextKind.WAIT else Result.HALTED,
                           None, why.reason, 1)
        gate.register(OLD, rollout.MemberState.IDLE)
        go.wait()
        time.sleep(max(0, conf["start_at"] - time.time()) + random.uniform(0, conf["jitter"]))
        me["begin"] = time.time()
        while time.time() < conf["until"]:
            looking = (time.time(), store.mine())
            try:
                outcome = rollout.run(gate, new, OLD, update_once, not_yet)
            except AgentError:
                me["errors"] += 1  # the engine did not answer in time: the daemon retries
                outcome = Outcome(new, Result.WAITING)
            if outcome.result != Result.WAITING:
                me["end_kind"] = str(outcome.result)
                me["waited_to"] = looking if me["waited_from"] else None
                return
            me["waited_from"] = me["waited_from"] or (time.time(), store.mine())
            wait_turn(gate, me, max(0.1, min(conf["poll"], conf["until"] - time.time())))
        me["end_kind"] = "timeout"

    def beats(k, of):
        """The daemon's heartbeat thread, for one in `of` nodes of the process (a
        daemon has one per node): each beat's calls are the node's, at its time."""
        while not go.wait(0.5):
            pass
        while time.time() < conf["until"]:
            for name, gate in sorted(gates.items())[k::of]:
                me = nodes[name]
                if me["end_kind"]:
                    continue
                before = store.mine()
                try:
                    gate.beat()
                except AgentError:
                    me["errors"] += 1
                me["beats"].append((time.time(), store.mine() - before))
            time.sleep(MEMBER_TTL / 3)

    def wait_turn(gate, me, timeout):
        """True when woken; polling (or no watch), a sleep of timeout."""
        if not conf["watch"] or gate.token is None:
            time.sleep(timeout)
            return False
        try:
            return gate.wait_turn(timeout) == Watched.CHANGED
        except AgentError:
            me["errors"] += 1
            return False

    gates = {}
    threads = [threading.Thread(target=node, args=(n,), daemon=True) for n in names]
    for k in range(BEATERS):
        threading.Thread(target=beats, args=(k, BEATERS), daemon=True).start()
    for t in threads:
        t.start()
    while not os.path.exists(conf["go"]):
        time.sleep(0.2)
    with open(conf["go"]) as f:
        conf.update(json.load(f))
    conf["fail_at"] *= conf["fails"]
    go.set()
    for t in threads:
        t.join(max(0, conf["until"] + 5 - time.time()))
    with open(out, "w") as f:
        json.dump({"nodes": nodes, "requests": store.total}, f)


# --- one run: processes of nodes, a sampler, a dead member ---------------------
def _sample(records, rid, stop, samples, members):
    while not stop.wait(0.5):
        record = records.stage(rid, 0) or {}
        samples.append(sum(1 for e in record.get("nodes", {}).values() if e.get("state") == "started"))
        members.append(len(records.members(GROUP)))


def _registered(records, n, timeout=300):
    """Wait until the n nodes are members (a stage's targets are its live members:
    a rollout started earlier would run with part of the fleet); how long it took."""
    t0 = time.time()
    while len(records.members(GROUP)) < n and time.time() - t0 < timeout:
        time.sleep(1)
    return time.time() - t0


def _dead_member(records, dead):
    """Register a member that never beats again: how long until members() drops it."""
    records.register(GROUP, "dead-0", {"image_id": OLD, "state": "waiting", "since": time.time()},
                     MEMBER_TTL)
    t0 = time.time()
    while "dead-0" in records.members(GROUP) and time.time() - t0 < MEMBER_TTL * 3:
        time.sleep(0.5)
    dead.append(time.time() - t0)


def one_run(url, work, n, procs, max_parallel, poll, limit, fail_after=None, dead=None, watch=False):
    """A dict of what one rollout of n nodes did; poll is the watch's timeout when watching."""
    from update_agent.coordination import stores
    from update_agent.coordination.rollouts import FleetRecords
    from update_agent.decide.rollout.policy import rollout_id
    new = "img-%d" % time.time_ns()  # a rollout of its own per run
    records = FleetRecords(stores.for_url(url, timeout=30), time.time)
    go = os.path.join(work, "go-%s.json" % new)
    conf = {"policy": {"stages": [{"name": GROUP, "group": GROUP, "max_parallel": max_parallel,
                                   "halt_after": 1}]},
            # nodes see the image at different moments: their polls' phases spread over one interval
            "poll": poll, "jitter": min(poll, 5), "new": new, "go": go, "watch": watch}
    ctx = multiprocessing.get_context("fork")
    names = ["n%04d" % i for i in range(n)]
    outs = [os.path.join(work, "rollout-%d.json" % p) for p in range(procs)]
    # one node (of the first process) records the failure: one halt, at a known time
    ps = [ctx.Process(target=simulate, args=(url, names[p::procs], dict(conf, fails=p == 0), outs[p]))
          for p in range(procs)]
    for p in ps:
        p.start()
    registered = _registered(records, n)
    start_at = time.time() + 2
    until = start_at + limit
    with open(go + ".part", "w") as f:  # renamed: a node process never reads half of it
        json.dump({"start_at": start_at, "until": until,
                   "fail_at": start_at + fail_after if fail_after else 0}, f)
    os.rename(go + ".part", go)
    stop, samples, died, members = threading.Event(), [], [], []
    sampler = threading.Thread(target=_sample, args=(records, rollout_id(new), stop, samples, members))
    sampler.start()
    if dead:
        _dead_member(records, died)
    try:
        for p in ps:
            p.join(max(0, until + 30 - time.time()))
    finally:
        for p in ps:
            if p.is_alive():
                p.kill()  # by its own PID: only what this run started
                p.join()
        stop.set()
        sampler.join()
    nodes = {}
    requests = 0
    for out in outs:
        if os.path.exists(out):
            with open(out) as f:
                got = json.load(f)
            nodes.update(got["nodes"])
            requests += got["requests"]
    record = records.stage(rollout_id(new), 0) or {}
    return dict(summarize(nodes, requests, samples, record, start_at, died), registered=registered,
                members_seen=(min(members, default=0), max(members, default=0)))


def summarize(nodes, requests, samples, record, start_at, died):
    """The figures of one run, from the nodes' own records and the stage record."""
    ran = [(m["start"], m["end"]) for m in nodes.values() if m["start"]]
    waiting_s = sum((m["start"] or m["begin"]) - m["begin"] for m in nodes.values() if m["begin"])
    waited = [(m["waited_from"], m["waited_to"], m["beats"]) for m in nodes.values()
              if m["start"] and m["waited_to"]]
    waiting_req = sum(to[1] - since[1] + sum(c for t, c in beats if since[0] <= t < to[0])
                      for since, to, beats in waited)
    waited_s = sum(to[0] - since[0] for since, to, _ in waited)
    per_step = sum(m["requests_waiting"] for m in nodes.values() if m["start"])
    halts = [m["halt_at"] for m in nodes.values() if m["halt_at"]]
    started = [e.get("started", 0) for e in record.get("nodes", {}).values()]
    kinds = collections.Counter(m["end_kind"] for m in nodes.values())
    return {"nodes": len(nodes), "done": kinds.get("success", 0), "kinds": dict(kinds),
            "total_s": max((e for _, e in ran), default=start_at) - start_at,
            "requests": requests, "waiting_node_s": waiting_s,
            "per_waiting_node": per_waiting_node(waiting_req, waited_s),
            "calls_per_node_to_its_step": per_step / max(1, len(ran)),
            "max_started_sampled": max(samples, default=0), "max_running": max_overlap(ran),
            "halt_at": min(halts, default=0),
            "halt_latency": (max(started) - min(halts)) if halts and started else None,
            "errors": sum(m["errors"] for m in nodes.values()), "halted": record.get("halted", ""),
            "dead_drop_s": died[0] if died else None}


def goal_lines(runs, n, max_parallel):
    """The report's lines against the issue's goals, from one_run() results by label."""
    ideal = n / max_parallel * STEP_S
    lines = []
    for label, r in runs.items():
        if "halt" in label:
            continue
        lines.append("* %s: %d of %d nodes updated in %.1f s, %.2f x the ideal %.0f s (goal <= 1.10): "
                     "%s; %.3f requests/s per waiting node (goal <= 0.2): %s; at most %d started "
                     "at a sampled instant, %d running at once (limit %d): %s%s"
                     % (label, r["done"], n, r["total_s"], r["total_s"] / ideal, ideal,
                        _met(r["done"] == n and r["total_s"] <= ideal * 1.1), r["per_waiting_node"],
                        _met(r["per_waiting_node"] <= 0.2), r["max_started_sampled"], r["max_running"],
                        max_parallel, _met(max(r["max_started_sampled"], r["max_running"]) <= max_parallel),
                        "; %d engine calls failed (retried)" % r["errors"] if r["errors"] else ""))
    for label, r in runs.items():
        if "halt" not in label:
            continue
        if r["halt_latency"] is None:
            lines.append("* %s: no failure was recorded: not measured" % label)
        else:
            lines.append("* %s: the last step started %.2f s after the failure was recorded "
                         "(goal <= 5 s): %s; %d nodes stopped as halted"
                         % (label, max(0.0, r["halt_latency"]), _met(r["halt_latency"] <= 5),
                            r["kinds"].get("halted", 0)))
        if r["dead_drop_s"] is not None:
            lines.append("* a member that stopped beating left members() after %.1f s (ttl %d s)"
                         % (r["dead_drop_s"], MEMBER_TTL))
    return lines


def _met(ok):
    return "met" if ok else "MISSED"
