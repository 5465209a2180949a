"""Real peers for daemon tests: a notify socket, a Heat signal server, the daemon
process, and os-collect-config writing the node's cache."""

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import world


class NotifySocket:
    """The datagram socket systemd would own: records every sd_notify message."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages = []  # (wall-clock time, {key: value})
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.time(), fields))

    def statuses(self):
        return [m["STATUS"] for _, m in self.messages if "STATUS" in m]

    def wait_for(self, predicate, timeout=60):
        """The time of the first message satisfying predicate(fields)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for t, m in self.messages[seen:]:
                if predicate(m):
                    return t
            time.sleep(0.01)
        raise AssertionError("no such notify message; got %s" % [m for _, m in self.messages])

    def close(self):
        self.sock.close()


class HeatServer:
    """A real HTTP endpoint that records deployment signals (POST or PUT)."""

    def __init__(self, fail_first=0):
        self.signals = []
        self.fail_first = fail_first
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if outer.fail_first > 0:
                    outer.fail_first -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.signals.append((self.command, self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()
            do_POST = do_PUT = _record

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def deployment(dep_id, signal_url, update_identifier="u1", verb="POST", **inputs):
    values = dict(inputs)
    if update_identifier is not None:
        values["update_identifier"] = update_identifier
    values.update(deploy_server_id="server-1", deploy_action="UPDATE", deploy_stack_id="stack/1",
                  deploy_resource_name="update", deploy_signal_transport="CFN_SIGNAL"
                  if verb == "POST" else "TEMP_URL_SIGNAL",
                  deploy_signal_id=signal_url, deploy_signal_verb=verb)
    return {"id": dep_id, "name": "update-%s" % dep_id, "group": "update-agent", "config": "",
            "inputs": [{"name": k, "value": v, "type": "String"} for k, v in values.items()],
            "outputs": [], "options": {}}


def start_daemon(root, config, notify_path=None, watchdog_usec=None, extra_env=None, wrap=()):
    env = dict(os.environ, PYTHONPATH=os.path.join(world.PROJECT, "agent"))
    env.pop("NOTIFY_SOCKET", None)
    if notify_path:
        env["NOTIFY_SOCKET"] = notify_path
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    env.update(extra_env or {})
    argv = list(wrap) + [sys.executable, "-m", "update_agent", "--root", root, "--config", config, "run"]
    return subprocess.Popen(argv, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def stop_daemon(proc, timeout=60):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return proc.returncode, out, err


def run_os_collect_config(node_cache_dir, local_dir):
    """The real os-collect-config (local collector) writing the node's cache.

    It writes the absolute paths of its cache into os_config_files.json, so it
    runs where those paths are the node's: in a mount namespace of its own, the
    node's cache directory bind-mounted at /var/lib/os-collect-config.
    """
    occ = os.path.join(os.path.dirname(sys.executable), "os-collect-config")
    script = ('mount -t tmpfs occ /var/lib && mkdir /var/lib/os-collect-config && '
              'mount --bind "$1" /var/lib/os-collect-config && '
              'exec "$2" --one-time --cachedir /var/lib/os-collect-config --local-path "$3" '
              '--config-file /dev/null --command true local')
    # its local collector crashes under a UTF-8 locale
    env = dict(os.environ, LC_ALL="C")
    env.pop("LANG", None)
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "occ",
                           node_cache_dir, occ, local_dir], env=env, capture_output=True,
                          text=True, timeout=120)


class JournalSocket(NotifySocket):
    """A stand-in journald: the datagram socket systemd-python's journal.send()
    writes to, parsed with the native protocol (KEY=value lines, or KEY, a
    64-bit little-endian length and raw bytes for values with newlines)."""

    def _loop(self):
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except OSError:
                return
            self.messages.append((time.time(), parse_journal(data)))


def parse_journal(data):
    fields, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            i = nl + 1
        else:
            key = line
            size = int.from_bytes(data[nl + 1:nl + 9], "little")
            value = data[nl + 9:nl + 9 + size]
            i = nl + 9 + size + 1
        fields[key.decode()] = value.decode("utf-8", "replace")
    return fields


def in_fake_journal(journal_dir):
    """argv prefix: run a command where journald's socket is the test's."""
    script = ('mount -t tmpfs journal /run/systemd && mkdir /run/systemd/journal && '
              'mount --bind "$0" /run/systemd/journal && exec "$@"')
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, journal_dir]
