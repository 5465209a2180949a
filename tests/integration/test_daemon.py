"""update-agent run: a real daemon process on a sandbox node, fed by the real
os-collect-config, reporting through a notify socket, signalling a real HTTP
endpoint the way Heat expects."""

import json
import os
import time

import pytest

import world
from daemon_helpers import (HeatServer, NotifySocket, deployment, run_os_collect_config,
                            start_daemon, stop_daemon)
from world import agent

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]

A_METADATA = {"image_id": "img-A", "update_agent": {"image_url": "file:///nonexistent/A.img"}}


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    return world.World(str(tmp_path_factory.mktemp("daemon")))


def b_metadata(w, tmp_path):
    return {"image_id": "img-B", "update_agent": {"image_url": world.offered(tmp_path, w.image_b),
                                                  "image_digest": world.sha256(w.image_b)}}


def config(tmp_path, **daemon):
    keys = dict(poll_interval=60, splay=0)
    keys.update(daemon)
    path = tmp_path / "agent.conf"
    path.write_text("[daemon]\n" + "".join("%s = %s\n" % kv for kv in keys.items()))
    return str(path)


def local_data(directory, metadata):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "meta.json")
    with open(path, "w") as f:
        json.dump(metadata, f)
    os.chmod(path, 0o644)  # os-collect-config refuses world-writable local data


def test_changed_image_id_in_the_occ_cache_updates_the_node(w, tmp_path):
    n = w.node(str(tmp_path), occ_mount=True)
    occ_dir = os.path.join(n.root, "var/lib/os-collect-config")
    local = str(tmp_path / "local-data")
    notify = NotifySocket(str(tmp_path / "notify"))
    proc = None
    try:
        local_data(local, A_METADATA)
        r = run_os_collect_config(occ_dir, local)
        assert r.returncode == 0, r.stderr
        proc = start_daemon(n.root, config(tmp_path), notify.path, watchdog_usec=400000)
        notify.wait_for(lambda m: m.get("READY") == "1")
        assert any("inotify" in s for s in notify.statuses()), notify.statuses()

        local_data(local, b_metadata(w, tmp_path))
        r = run_os_collect_config(occ_dir, local)
        assert r.returncode == 0, r.stderr
        changed_at = os.stat(os.path.join(occ_dir, "meta.json.json")).st_mtime
        started = notify.wait_for(lambda m: m.get("STATUS", "").startswith("in-place to img-B"))
        notify.wait_for(lambda m: m.get("STATUS", "").startswith("img-B success"), timeout=120)
        latency = started - changed_at
        print("\ndetection latency (cache written -> apply started): %.3f s" % latency)
        assert latency < 30, "the daemon must not wait for its 60 s poll"

        world.assert_matches_image(n.root, w.tree_b)
        assert "ro" in world.root_mount_options(n.root)
        assert any("syncing:" in s for s in notify.statuses())
        assert any(m.get("WATCHDOG") == "1" for _, m in notify.messages)
        code, _, err = stop_daemon(proc)
        assert code == 0, err
        assert any(m.get("STOPPING") == "1" for _, m in notify.messages)
        status = json.loads(agent(n.root, "status", "--json").stdout)
        assert status["desired_image_id"] == "img-B"
        assert status["last_result"]["result"] == "success"
    finally:
        if proc is not None:
            stop_daemon(proc)
        notify.close()
        n.stop()


def test_daemon_survives_bad_metadata_and_retries(w, tmp_path):
    n = w.node(str(tmp_path), occ_mount=True,
               occ_cache={"heat_local.json": {"image_id": "img B; reboot"}})
    notify = NotifySocket(str(tmp_path / "notify"))
    proc = start_daemon(n.root, config(tmp_path, poll_interval=2), notify.path)
    try:
        notify.wait_for(lambda m: m.get("STATUS", "").startswith("error:") and "img B; reboot" in m["STATUS"])
        assert proc.poll() is None, "the daemon keeps running"
        n.write_occ_cache({"heat_local.json": b_metadata(w, tmp_path)})
        notify.wait_for(lambda m: m.get("STATUS", "").startswith("img-B success"), timeout=120)
        assert open(os.path.join(n.root, "etc/image_id")).read() == "img-B\n"
    finally:
        stop_daemon(proc)
        notify.close()
        n.stop()


def test_heat_deployments_are_applied_and_signalled(w, tmp_path):
    heat = HeatServer(fail_first=1)  # a 503 first: the signal is retried
    n = w.node(str(tmp_path), occ_mount=True)
    try:
        b = b_metadata(w, tmp_path)["update_agent"]
        deployments = [
            deployment("d-unset", heat.url + "/unset", update_identifier=None, image_id="img-B"),
            deployment("d-bad", heat.url + "/bad", image_id="img-B", image_url=b["image_url"],
                       image_digest="sha256:" + "1" * 64),
        ]
        n.write_occ_cache({"heat_local.json": {"deployments": deployments}})
        r = agent(n.root, "run", "--once", config=config(tmp_path))
        assert r.returncode == 1, "--once says a deployment failed"
        by_path = {path: body for _, path, body in heat.signals}
        assert by_path["/unset"]["deploy_status_code"] == 0
        assert "unset update_identifier" in by_path["/unset"]["deploy_stdout"]
        assert by_path["/bad"]["deploy_status_code"] != 0
        assert "digest mismatch" in by_path["/bad"]["deploy_stderr"]
        assert open(os.path.join(n.root, "etc/image_id")).read() == "img-A\n"

        deployments[1] = deployment("d-good", heat.url + "/good", update_identifier="2026-11-23",
                                    verb="PUT", image_id="img-B", **b)
        n.write_occ_cache({"heat_local.json": {"deployments": deployments}})
        r = agent(n.root, "run", "--once", config=config(tmp_path))
        assert r.returncode == 0, r.stderr
        verb, _, good = [s for s in heat.signals if s[1] == "/good"][0]
        assert verb == "PUT" and good["deploy_status_code"] == 0
        assert good["image_id"] == "img-B" and good["action"] == "in-place"
        assert good["changes"]["changed"] > 0 and good["duration_s"] > 0
        assert good["reasons"] and "deploy_stderr" in good
        world.assert_matches_image(n.root, w.tree_b)

        # the same metadata again: already done, nothing applied, nothing signalled again
        count = len(heat.signals)
        assert agent(n.root, "run", "--once", config=config(tmp_path)).returncode == 0
        assert len(heat.signals) == count
        done = json.load(open(os.path.join(n.root, "var/lib/update-agent/deployments.json")))
        assert done["d-good/2026-11-23"]["result"] == "success"
        assert "d-bad/u1" not in done, "a failed deployment is not recorded, so it is retried"
    finally:
        heat.close()
        n.stop()


def test_deploy_prints_the_signal_for_one_deployment(w, tmp_path):
    n = w.node(str(tmp_path))
    try:
        d = deployment("d-1", "http://127.0.0.1:9/never", image_id="img-B", **b_metadata(w, tmp_path)["update_agent"])
        import subprocess
        import sys
        r = subprocess.run([sys.executable, "-m", "update_agent", "--root", n.root, "deploy"],
                           input=json.dumps(d), capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=os.path.join(world.PROJECT, "agent")))
        assert r.returncode == 0, r.stderr
        body = json.loads(r.stdout)
        assert body["deploy_status_code"] == 0 and body["image_id"] == "img-B"
        assert body["action"] == "in-place"
        assert open(os.path.join(n.root, "etc/image_id")).read() == "img-B\n"
    finally:
        n.stop()


def test_hold_stops_automatic_updates_until_unhold(w, tmp_path):
    n = w.node(str(tmp_path), occ_mount=True, occ_cache={"heat_local.json": b_metadata(w, tmp_path)})
    try:
        assert agent(n.root, "hold", "--reason", "DB migration tonight").returncode == 0
        assert agent(n.root, "run", "--once", config=config(tmp_path)).returncode == 0
        assert open(os.path.join(n.root, "etc/image_id")).read() == "img-A\n"
        status = json.loads(agent(n.root, "status", "--json").stdout)
        assert status["held"]["reason"] == "DB migration tonight"
        assert "DB migration tonight" in agent(n.root, "status").stdout
        assert agent(n.root, "unhold").returncode == 0
        assert agent(n.root, "run", "--once", config=config(tmp_path)).returncode == 0
        assert open(os.path.join(n.root, "etc/image_id")).read() == "img-B\n"
    finally:
        n.stop()


def test_metrics_textfile_and_history(w, tmp_path):
    metrics = tmp_path / "textfile"
    n = w.node(str(tmp_path), occ_mount=True, occ_cache={"heat_local.json": b_metadata(w, tmp_path)})
    try:
        conf = config(tmp_path, metrics_dir=str(metrics))
        assert agent(n.root, "run", "--once", config=conf).returncode == 0
        prom = (metrics / "update_agent.prom").read_text()
        assert 'update_agent_info{image_id="img-B"} 1' in prom
        assert 'update_agent_last_result{result="success",image_id="img-B"} 1' in prom
        assert "update_agent_last_duration_seconds" in prom
        hist = json.loads(agent(n.root, "history", "--json", "--changes").stdout)
        assert hist[-1]["result"] == "success" and hist[-1]["duration_s"] > 0
        assert "/usr/lib/app/libapp.so" in hist[-1]["change_lists"]["changed"]
        assert "/usr/share/app-old" in hist[-1]["change_lists"]["deleted"]
    finally:
        n.stop()


def test_journal_gets_structured_fields(w, tmp_path):
    pytest.importorskip("systemd.journal", reason="systemd-python is not installed")
    from daemon_helpers import JournalSocket, in_fake_journal
    jdir = tmp_path / "journal"
    jdir.mkdir()
    journal = JournalSocket(str(jdir / "socket"))
    n = w.node(str(tmp_path), occ_mount=True, occ_cache={"heat_local.json": b_metadata(w, tmp_path)})
    try:
        proc = start_daemon(n.root, config(tmp_path), wrap=in_fake_journal(str(jdir)))
        code, _, err = stop_daemon_after(proc, journal)
        assert code == 0
        fields = [m for _, m in journal.messages]
        steps = {m.get("STEP") for m in fields if m.get("IMAGE_ID") == "img-B"}
        assert {"pre-configure", "sync", "commit", "remount-ro"} <= steps, fields
        done = [m for m in fields if m.get("RESULT") == "success"]
        assert done and done[0]["IMAGE_ID"] == "img-B" and done[0]["ACTION"] == "in-place"
        assert all(m.get("SYSLOG_IDENTIFIER") == "update-agent" for m in fields)
        assert err == "", "with journald there, nothing goes to stderr"
    finally:
        journal.close()
        n.stop()


def stop_daemon_after(proc, journal):
    journal.wait_for(lambda m: m.get("RESULT") == "success", timeout=120)
    return stop_daemon(proc)


def test_metadata_url_is_polled_with_conditional_gets(w, tmp_path):
    import http.server
    import threading
    doc = {"body": json.dumps(A_METADATA).encode(), "etag": '"a"'}
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("If-None-Match"))
            if self.headers.get("If-None-Match") == doc["etag"]:
                self.send_response(304)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", doc["etag"])
            self.send_header("Content-Length", str(len(doc["body"])))
            self.end_headers()
            self.wfile.write(doc["body"])

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d/metadata" % server.server_address[1]
    n = w.node(str(tmp_path))
    notify = NotifySocket(str(tmp_path / "notify"))
    proc = start_daemon(n.root, config(tmp_path, metadata_url=url, poll_interval=1, splay=0),
                        notify.path)
    try:
        notify.wait_for(lambda m: m.get("READY") == "1")
        deadline = time.monotonic() + 30
        while seen.count('"a"') < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert seen[0] is None and seen.count('"a"') >= 2, "later polls are conditional"
        doc.update(body=json.dumps(b_metadata(w, tmp_path)).encode(), etag='"b"')
        notify.wait_for(lambda m: m.get("STATUS", "").startswith("img-B success"), timeout=120)
        assert open(os.path.join(n.root, "etc/image_id")).read() == "img-B\n"
    finally:
        stop_daemon(proc)
        notify.close()
        server.shutdown()
        server.server_close()
        n.stop()


def test_a_second_daemon_refuses_to_start(w, tmp_path):
    n = w.node(str(tmp_path), occ_mount=True, occ_cache={"heat_local.json": A_METADATA})
    notify = NotifySocket(str(tmp_path / "notify"))
    first = start_daemon(n.root, config(tmp_path), notify.path)
    try:
        notify.wait_for(lambda m: m.get("READY") == "1")
        r = agent(n.root, "run", config=config(tmp_path))
        assert r.returncode == 1 and "another update-agent daemon" in r.stderr
        assert first.poll() is None
    finally:
        stop_daemon(first)
        notify.close()
        n.stop()


def test_end_to_end_heat_deployment_through_os_collect_config(w, tmp_path, http_dir):
    # os-collect-config (real) delivers a Heat deployment; the image comes over HTTP
    # from 127.0.0.1 and the signal goes back to a recording endpoint
    heat = HeatServer()
    url = http_dir.serve(w.image_b, "img-B.ext4")
    n = w.node(str(tmp_path), occ_mount=True)
    occ_dir = os.path.join(n.root, "var/lib/os-collect-config")
    local = str(tmp_path / "local-data")
    notify = NotifySocket(str(tmp_path / "notify"))
    proc = None
    try:
        local_data(local, {"deployments": []})
        assert run_os_collect_config(occ_dir, local).returncode == 0
        proc = start_daemon(n.root, config(tmp_path), notify.path)
        notify.wait_for(lambda m: m.get("READY") == "1")
        d = deployment("d-e2e", heat.url + "/signal/d-e2e", update_identifier="2026-11-23T01",
                       image_id="img-B", image_url=url, image_digest=world.sha256(w.image_b))
        local_data(local, {"deployments": [d]})
        r = run_os_collect_config(occ_dir, local)
        assert r.returncode == 0, r.stderr
        changed_at = os.stat(os.path.join(occ_dir, "meta.json.json")).st_mtime
        started = notify.wait_for(lambda m: m.get("STATUS", "").startswith("in-place to img-B"))
        print("\ndetection latency (os-collect-config wrote the cache -> apply started): %.3f s"
              % (started - changed_at))
        deadline = time.monotonic() + 120
        while not heat.signals and time.monotonic() < deadline:
            time.sleep(0.05)
        (verb, path, body), = heat.signals
        assert (verb, path) == ("POST", "/signal/d-e2e")
        assert body["deploy_status_code"] == 0 and body["image_id"] == "img-B"
        assert body["action"] == "in-place" and body["changes"]["changed"] > 0
        world.assert_matches_image(n.root, w.tree_b)
        assert "ro" in world.root_mount_options(n.root)
    finally:
        if proc is not None:
            stop_daemon(proc)
        notify.close()
        heat.close()
        n.stop()
