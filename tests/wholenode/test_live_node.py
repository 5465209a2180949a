"""A whole Debian node, booted with systemd as PID 1 under systemd-nspawn, its
root a read-only loop-mounted image, updated in place to a newer image while
its services are probed from outside every 50 ms.

Image A is debootstrapped bookworm with nginx-light and a Python HTTP service
(pysvc.service); image B is A upgraded from bookworm-updates and -security
(new libraries under nginx, python3 and systemd), with pysvc's own module and
its unit file changed. Loop devices do not exist inside the container, so the
agent (inside the node) gets image B as a directory image bound in read-only.
"""

import json
import os
import subprocess
import threading
import http.client
import time
import urllib.request

import pytest

import debian_archive
import debian_roots
import nspawn_node
from update_agent.node import manifest

pytestmark = [pytest.mark.wholenode, pytest.mark.usefixtures("need_mounts")]
AGENT = "/opt/update-agent/bin/update-agent"


class Probe:
    """GET a URL every 50 ms from outside the node; keep every answer."""

    def __init__(self, url):
        self.url, self.samples, self.stopping = url, [], False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stopping:
            t = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=0.5) as r:
                    self.samples.append((t, r.read().decode().strip()))
            except (OSError, http.client.HTTPException):
                # A restart may cut a response short (IncompleteRead): that
                # is a failed probe, i.e. downtime, not the end of probing.
                self.samples.append((t, None))
            time.sleep(max(0.0, 0.05 - (time.monotonic() - t)))

    def stop(self):
        self.stopping = True
        self.thread.join()

    def downtime(self):
        """The longest run of failed probes, in seconds."""
        longest, start = 0.0, None
        for t, body in self.samples:
            if body is None and start is None:
                start = t
            elif body is not None and start is not None:
                longest, start = max(longest, t - start), None
        if start is not None:
            longest = max(longest, self.samples[-1][0] - start)
        return longest

    def last(self):
        assert self.thread.is_alive() or self.stopping, "probe of %s died" % self.url
        return self.samples[-1][1] if self.samples else None


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("wholenode"))
    with debian_archive.skip_if_unreachable():
        a, b = debian_roots.node_roots(os.path.join(work, "roots"))
    return work, a, b


def wait_for(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_live_node_updated_in_place_without_reboot(roots):
    work, root_a, root_b = roots
    image = os.path.join(work, "rootA.ext4")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "cloudimg-rootfs", "-d", root_a, image, "1200M"],
                   check=True)
    meta_dir = os.path.join(work, "meta")
    os.makedirs(meta_dir, exist_ok=True)
    digest = manifest.digest_of(manifest.build(root_b, manifest.Excluder(()), skip_devices=False)[0])
    with open(os.path.join(meta_dir, "meta.json"), "w") as f:
        json.dump({"image_id": "debian-B", "update_agent": {"image_url": "file:///srv/B",
                                                          "image_digest": digest}}, f)
    node = nspawn_node.NspawnNode(os.path.join(work, "node"), image,
                                  binds=[(meta_dir, "/srv/images"), (root_b, "/srv/B")])
    probes = []
    with node:
        nginx = Probe("http://127.0.0.1:%d/" % debian_roots.NGINX_PORT)
        pysvc = Probe("http://127.0.0.1:%d/" % debian_roots.PYSVC_PORT)
        probes = [nginx, pysvc]
        assert wait_for(lambda: nginx.last() == "nginx image A" and
                        pysvc.last() == "pysvc image A"), (nginx.last(), pysvc.last())
        boot_id = node.exec(["cat", "/proc/sys/kernel/random/boot_id"]).stdout
        init = node.exec(["stat", "-c", "%Y", "/proc/1"]).stdout  # when PID 1 started

        r = node.exec([AGENT, "--metadata", "/srv/images/meta.json", "--dry-run", "--json"])
        plan = json.loads(r.stdout)
        assert plan["action"] == "in-place", plan["reasons"]
        predicted = plan["restarts"]
        assert {"nginx.service", "pysvc.service"} <= set(predicted["units"]), predicted
        assert predicted["daemon_reload"], "pysvc's unit file changed"

        started = time.monotonic()
        r = node.exec([AGENT, "--metadata", "/srv/images/meta.json", "apply"], check=False)
        took = time.monotonic() - started
        assert r.returncode == 0, r.stderr[-3000:]

        assert wait_for(lambda: nginx.last() == "nginx image B" and
                        pysvc.last() == "pysvc image B unit-B"), (nginx.last(), pysvc.last())
        time.sleep(0.5)
        for p in probes:
            p.stop()
        print("\napply took %.1f s; downtime measured from outside every 50 ms: "
              "nginx %.2f s, pysvc %.2f s" % (took, nginx.downtime(), pysvc.downtime()))

        assert node.exec(["cat", "/proc/sys/kernel/random/boot_id"]).stdout == boot_id
        assert node.exec(["stat", "-c", "%Y", "/proc/1"]).stdout == init, "PID 1 never restarted"
        assert node.proc.poll() is None, "the container never stopped"
        assert "ro" in node.exec(["findmnt", "-n", "-o", "OPTIONS", "/"]).stdout.split(",")
        assert node.exec(["cat", "/etc/image_id"]).stdout == "debian-B\n"
        history = json.loads(node.exec([AGENT, "history", "--json"]).stdout)
        done = history[-1]["restarts"]
        assert done["acted"] and done["units"] == predicted["units"], (done, predicted)
        assert done["daemon_reexec"] == predicted["daemon_reexec"]
        assert not done["failed"]
        # what policy does not restart is reported, and nothing else is left on old code
        assert all(s.startswith(("dbus.service", "init.scope")) for s in done["still_old"]) \
            or not done["still_old"], done["still_old"]
        failed = node.exec(["systemctl", "--failed", "--no-legend"], check=False).stdout
        assert "nginx" not in failed and "pysvc" not in failed, failed
    assert not os.path.ismount(node.root)
