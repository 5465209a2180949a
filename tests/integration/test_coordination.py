"""Fleet slots on real engines: etcd (Debian's etcd-server), Redis, ZooKeeper
(Debian's zookeeper), a FleetLock server, all on 127.0.0.1, with real
update-agent processes contending."""

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import etcd_local
from rollout_bench import max_overlap
import world
from update_agent.coordination import RebootSlots, fleetlock, stores
from update_agent.errors import AgentError

AGENT = [sys.executable, "-m", "update_agent"]


@pytest.fixture(params=["etcd", "redis", "zookeeper", "file"])
def lease_engine(request, tmp_path):
    """An engine's URL for lease slots, and a group of the test's own on it."""
    if request.param == "file":
        return "file://%s/slots" % tmp_path, "%s-%d" % (request.param, time.time_ns())
    url = request.getfixturevalue({"redis": "redis_url"}.get(request.param, request.param))
    return url, "%s-%d" % (request.param, time.time_ns())


def conf(tmp_path, backend, **extra):
    path = tmp_path / ("c%d.conf" % len(list(tmp_path.glob("c*.conf"))))
    keys = dict(backend=backend, **extra)
    path.write_text("[coordination]\n" + "".join("%s = %s\n" % kv for kv in keys.items()))
    return str(path)


def run_agent(config, *args, **kw):
    env = dict(os.environ, PYTHONPATH=os.path.join(world.PROJECT, "agent"))
    # the config sits in the test's own directory: that is the node's root, not the host's /tmp
    return subprocess.Popen(AGENT + ["--root", os.path.dirname(config), "--config", config]
                            + list(args), env=env, start_new_session=True, **kw)


def test_ten_agents_share_two_lease_slots(lease_engine, tmp_path):
    log = tmp_path / "held.log"
    c = conf(tmp_path, lease_engine[0], group=lease_engine[1])
    script = 'echo "start $(date +%%s.%%N)" >> %s; sleep 0.4; echo "end $(date +%%s.%%N)" >> %s' % (log, log)
    procs = [run_agent(c, "slot", "hold", "--max", "2", "--node-id", "node-%d" % i, "--",
                       "sh", "-c", script.replace("start", "start %d" % i).replace("end", "end %d" % i))
             for i in range(10)]
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [0] * 10, "all 10 finished"
    starts, ends = {}, {}
    for line in log.read_text().splitlines():
        kind, node, t = line.split()
        (starts if kind == "start" else ends)[node] = float(t)
    assert len(starts) == len(ends) == 10
    assert max_overlap([(starts[n], ends[n]) for n in starts]) <= 2


def test_a_killed_holder_loses_its_lease_slot(lease_engine, tmp_path):
    url, group = lease_engine
    c = conf(tmp_path, url, group=group, lease_ttl=3)
    holder = run_agent(c, "slot", "hold", "--max", "1", "--node-id", "a", "--", "sleep", "120")
    time.sleep(2)
    os.killpg(holder.pid, signal.SIGKILL)  # the agent and its command, no release
    holder.wait()
    started = time.monotonic()
    r = run_agent(c, "slot", "hold", "--max", "1", "--node-id", "b", "--timeout", "20", "--", "true")
    assert r.wait(timeout=60) == 0
    waited = time.monotonic() - started
    print("\nslot of a killed holder free again after %.1f s (lease 3 s)" % waited)
    assert waited < 15


def test_reboots_and_slot_hold_take_from_one_budget(lease_engine, tmp_path):
    url, group = lease_engine
    c = conf(tmp_path, url, group=group)
    rebooting = RebootSlots(stores.for_url(url), group, 1, "rebooting-node", time.time)
    assert rebooting.take()[0]  # a node down for its reboot holds the group's one slot
    r = run_agent(c, "slot", "hold", "--max", "1", "--node-id", "b", "--timeout", "2", "--", "true",
                  stderr=subprocess.PIPE, text=True)
    _, err = r.communicate(timeout=60)
    assert r.returncode == 1 and "no slot in group %s" % group in err and "rebooting-node" in err
    rebooting.release()
    r = run_agent(c, "slot", "hold", "--max", "1", "--node-id", "b", "--timeout", "20", "--",
                  "sleep", "3")
    time.sleep(1.5)
    assert not RebootSlots(stores.for_url(url), group, 1, "other", time.time).take()[0], \
        "a reboot waits for the maintenance that holds the slot"
    assert r.wait(timeout=60) == 0


@pytest.mark.parametrize("engine", ["etcd", "redis", "zookeeper", "file"])
def test_reboot_slots_are_records_that_outlive_their_holder(engine, request, tmp_path):
    url = ("file://%s/slots" % tmp_path if engine == "file"
           else request.getfixturevalue({"redis": "redis_url"}.get(engine, engine)))
    store = stores.for_url(url)
    group = "reboot-%s-%d" % (engine, time.time_ns())
    clock = time.time
    nodes = [RebootSlots(store, group, 2, "n%d" % i, clock, threshold=3) for i in range(10)]
    peak, stop = [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], len(nodes[0].state()["holders"]))
            time.sleep(0.005)

    def node_life(n):
        while not n.take()[0]:
            time.sleep(0.01)
        time.sleep(0.05)  # "rebooting"
        n.release()
    sampler = threading.Thread(target=sample)
    sampler.start()
    workers = [threading.Thread(target=node_life, args=(n,)) for n in nodes]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    stop.set()
    sampler.join()
    assert peak[0] <= 2 and nodes[0].state()["holders"] == {}
    # a holder that goes away (a reboot) keeps its record: no lease runs out
    assert nodes[0].take()[0] and nodes[1].take()[0]
    granted, why = nodes[2].take()
    assert not granted and "n0" in why and "n1" in why
    nodes[0].release()
    nodes[1].release()
    # failed updates stop the group until an operator clears it
    for n in nodes[:3]:
        n.failed()
    granted, why = nodes[3].take()
    assert not granted and "stopped" in why and "3 failed updates" in why
    nodes[3].clear()
    assert nodes[3].take()[0]


@pytest.mark.parametrize("scheme", ["etcd3+http", "redis", "zookeeper"])
def test_an_engine_that_does_not_answer_is_named_in_one_error(scheme):
    url = "%s://127.0.0.1:%d" % (scheme, etcd_local.free_port())  # nothing listens there
    slots = RebootSlots(stores.for_url(url, timeout=2), "g", 1, "n1", time.time)
    with pytest.raises(AgentError) as e:
        slots.take()
    assert url in str(e.value)


class FleetLockServer:
    """A FleetLock server (airlock's protocol) with a counting semaphore."""

    def __init__(self, max_holders):
        self.holders, self.max, self.requests = set(), max_holders, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, self.headers.get("fleet-lock-protocol"), body))
                node = body["client_params"]["id"]
                if self.headers.get("fleet-lock-protocol") != "true":
                    return self._reply(400, {"kind": "missing_protocol_header", "value": ""})
                if self.path == "/v1/pre-reboot":
                    if node not in outer.holders and len(outer.holders) >= outer.max:
                        return self._reply(409, {"kind": "failed_lock_semaphore_full",
                                                 "value": "semaphore currently full"})
                    outer.holders.add(node)
                elif self.path == "/v1/steady-state":
                    outer.holders.discard(node)
                return self._reply(200, {})

            def _reply(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_fleetlock_client_against_a_fleetlock_server():
    server = FleetLockServer(1)
    a = fleetlock.Client(server.url, "workers", "node-a")
    b = fleetlock.Client(server.url, "workers", "node-b")
    assert a.take()[0] and a.take()[0], "recursive and idempotent"
    granted, why = b.take()
    assert not granted and "failed_lock_semaphore_full" in why
    a.release()
    assert b.take()[0]
    path, header, body = server.requests[0]
    assert (path, header) == ("/v1/pre-reboot", "true")
    assert body == {"client_params": {"id": "node-a", "group": "workers"}}
    server.server.shutdown()
