"""A whole Debian node booted under systemd-nspawn, with systemd as PID 1.

The node's root is an ext4 image attached read-write to a loop device and
mounted read-only (as a real node's root), with its state partition at
/var/lib/update-agent and tmpfs for what a read-only node keeps in memory
(/var/log, /var/lib/nginx). nspawn boots it with those mounts (-D), and the
node's services run on 127.0.0.1 of this machine (no private network).
Use inside a private mount namespace; a tmpfs over /run/systemd there gives
nspawn the runtime directory it expects without touching this machine's.
"""

import os
import signal
import subprocess
import time

import sandbox


def run(argv, **kw):
    return subprocess.run(argv, check=True, text=True, capture_output=True, **kw)


class NspawnNode(sandbox.Mounts):
    def __init__(self, workdir, root_image, binds=()):
        super().__init__()
        self.workdir = workdir
        self.root = os.path.join(workdir, "root")
        self.root_image = root_image
        self.binds = list(binds)          # (host dir, node path), read-only
        self.proc = None
        self.leader = None

    def start(self, timeout=120):
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout):
        os.makedirs(self.root, exist_ok=True)
        self._mount(self._loop(self.root_image), self.root, "-o", "ro")
        state = os.path.join(self.workdir, "state.ext4")
        run(["mkfs.ext4", "-q", "-F", state, "1024M"])
        self._mount(self._loop(state), os.path.join(self.root, "var/lib/update-agent"))
        self._mount("nspawn-run", "/run/systemd", "-t", "tmpfs")
        argv = ["systemd-nspawn", "--register=no", "--keep-unit", "--console=pipe",
                "--resolv-conf=off", "--timezone=off", "-q", "-D", self.root, "-b",
                "--tmpfs=/var/log", "--tmpfs=/var/lib/nginx"]
        argv += ["--bind-ro=%s:%s" % (host, node) for host, node in self.binds]
        log = open(os.path.join(self.workdir, "nspawn.log"), "w")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("systemd-nspawn exited: %s" % open(log.name).read()[-2000:])
            if self.leader is None:
                kids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                                      text=True).stdout.split()
                self.leader = int(kids[0]) if kids else None
            if self.leader:
                state = self.exec(["systemctl", "is-system-running"], check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return self
            time.sleep(0.5)
        raise RuntimeError("node did not boot in %ds (state %r)" % (timeout, state))

    def exec(self, argv, check=True, **kw):
        """Run a command inside the node (all of its namespaces)."""
        return subprocess.run(["nsenter", "-t", str(self.leader), "-a"] + list(argv),
                              check=check, text=True, capture_output=True, **kw)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nspawn halts the node's systemd
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.release()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
