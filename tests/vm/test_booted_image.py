"""The element's own image, booted: it updates itself in place, fed by the node's real
tooling, on the element's read-only root.

The run's one build of the element (the `element_image` fixture, built with
DIB_UPDATE_AGENT_READONLY_ROOT=1) is booted under QEMU with its own kernel and initrd,
and a second disk labelled ua-state for the agent's state. Its os-collect-config (the
element's `collect` extra) polls metadata the test serves from nginx on 127.0.0.1, the
way Heat's metadata reaches a node, through QEMU's restricted user network; its command
is os-refresh-config, as TripleO's images ran it, whose configure.d runs the real
os-apply-config. The deployer's `/etc/os-collect-config.conf` is written onto the disk
before the boot, as cloud-init would write it.

Image B is the same tree with a file changed, one added, one deleted and its image id,
published into the build's repository (a hard-linked copy of it). The test changes the
served metadata twice: first a setting only, which os-refresh-config must render on the
read-only root, then the image, which the node must take without a reboot, its disk
afterwards holding B. A configure hook both images carry logs what each configure phase
saw, so the test checks which runs happened, on which tree and with which root.
"""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

import nginx_local
import vm_node
from debian_roots import write
from dib_image import mounted
from update_agent.decide import repo_format
from update_agent.node import manifest
from update_agent.repo import publish
from update_agent.system import System

pytestmark = [pytest.mark.dib, pytest.mark.vm]
IMAGE_B = "img-b"
MARK = "usr/local/share/booted-test"
PROBE = "usr/libexec/os-refresh-config/configure.d/50-booted-test-probe"
# os-apply-config's element, in short: configure.d renders the templates
OAC_HOOK = "#!/bin/sh\nexec os-apply-config\n"
OAC_HOOK_PATH = "usr/libexec/os-refresh-config/configure.d/20-os-apply-config"
TEMPLATE = "usr/libexec/os-apply-config/templates/etc/booted-test.conf"
RENDERED = "etc/booted-test.conf"
# one line per configure phase: which tree it ran on, for whose update, on which root
PROBE_HOOK = """\
#!/bin/sh
root=$(awk '$2 == "/" { split($4, o, ","); print o[1] }' /proc/mounts | tail -n 1)
logger -t booted-test "configure saw release=$(cat /%s/release) action=${UPDATE_AGENT_ACTION:-none}\
 root=$root $(cat /%s 2>/dev/null)"
""" % (MARK, RENDERED)
OCC_CONF = """\
[DEFAULT]
collectors = request
command = os-refresh-config
polling_interval = 5

[request]
metadata_url = http://%s:%d/md.json
"""
# the image builder's choice of network: DHCP on the NIC, by systemd-networkd
NETWORK = "[Match]\nName=en*\n\n[Network]\nDHCP=ipv4\n"
CMDLINE = ("root=LABEL=cloudimg-rootfs ro console=ttyS0 panic=5 "
           "systemd.journald.forward_to_console=1 systemd.journald.max_level_console=info")
# the node's own paths, which the sync keeps (the agent's preserve list and state dir)
NODE_PATHS = (RENDERED, "etc/image_id", "etc/passwd", "etc/group", "etc/shadow", "etc/gshadow",
              "etc/hostname", "etc/hosts", "etc/machine-id", "etc/os-collect-config.conf",
              "home", "root", "var/log", "run", "tmp", "var/tmp", "proc", "sys", "dev",
              "var/lib/update-agent", "lost+found", "var/lib/os-collect-config",
              ".update-agent-kept", ".update-agent-pinned")
# directories configure.d renders into after the sync: their mtime is the node's
RENDERED_INTO = ("etc",)
CONFIGURE = (r"booted-test\[\d+\]: configure saw release=(?P<release>\w+) "
             r"action=(?P<action>[\w-]+) root=(?P<root>r[ow]) ?(?P<conf>.*)$")


def make_image_b(a_root):
    """B's changes, made to a copy of A's tree."""
    write(a_root, MARK + "/release", "B\n")
    with open(os.path.join(a_root, MARK, "added.bin"), "wb") as f:
        f.write(os.urandom(3 << 20))
    os.unlink(os.path.join(a_root, MARK, "removed.txt"))
    write(a_root, "etc/image_id", IMAGE_B + "\n")


def record(repo, image_id):
    with open(os.path.join(repo, repo_format.record_path(image_id))) as f:
        return json.load(f)


class Metadata:
    """Heat's part: the node's metadata, served over HTTP and replaced by rename."""

    def __init__(self, www, repo, repo_url):
        self.path, self.repo, self.repo_url = os.path.join(www, "md.json"), repo, repo_url
        self.stamp = 0

    def serve(self, image_id, motd):
        with open(self.path + ".tmp", "w") as f:
            json.dump({"image_id": image_id, "booted": {"motd": motd},
                       "update_agent": {"repo": self.repo_url,
                                        "image_digest": record(self.repo, image_id)["manifest"]}},
                      f)
        # a Last-Modified later than the last, whole seconds apart: else os-collect-config's
        # request collector does not fetch it again
        self.stamp = max(time.time(), self.stamp + 2)
        os.utime(self.path + ".tmp", (self.stamp, self.stamp))
        os.rename(self.path + ".tmp", self.path)


@pytest.fixture(scope="module")
def world(element_image, tmp_path_factory):
    work = str(tmp_path_factory.mktemp("booted"))
    www = os.path.join(work, "www")
    os.makedirs(www)
    repo = os.path.join(www, "repo")
    # the repository's files are immutable: B's publish only adds files beside them
    subprocess.run(["cp", "-al", element_image.repo, repo], check=True)
    node, image_b = os.path.join(work, "node.raw"), os.path.join(work, "b.raw")
    subprocess.run(["cp", "--sparse=always", element_image.path, node], check=True)
    with mounted(node, os.path.join(work, "mnt"), writable=True) as root:
        write(root, "etc/systemd/network/10-dhcp.network", NETWORK)
        subprocess.run(["chroot", root, "systemctl", "enable", "systemd-networkd.service"],
                       check=True, capture_output=True)
        write(root, PROBE, PROBE_HOOK, mode=0o755)
        write(root, OAC_HOOK_PATH, OAC_HOOK, mode=0o755)
        write(root, TEMPLATE, "motd={{booted.motd}}\n")
        write(root, MARK + "/release", "A\n")
        write(root, MARK + "/removed.txt", "only in A\n")
        release = vm_node.kernel_of(root)
        boot = vm_node.DirectBoot(os.path.join(work, "vmlinuz"), os.path.join(work, "initrd"),
                                  CMDLINE)
        shutil.copy(os.path.join(root, "boot/vmlinuz-" + release), boot.vmlinuz)
        shutil.copy(os.path.join(root, "boot/initrd.img-" + release), boot.initrd)
    subprocess.run(["cp", "--sparse=always", node, image_b], check=True)
    with mounted(image_b, os.path.join(work, "mnt"), writable=True) as root:
        make_image_b(root)
        publish.publish(root, repo, IMAGE_B, System())
    state = os.path.join(work, "state.raw")
    with open(state, "wb") as f:
        f.truncate(2 << 30)
    subprocess.run(["mkfs.ext4", "-q", "-L", "ua-state", state], check=True)
    with nginx_local.origin(www, os.path.join(work, "nginx")) as origin:
        port = int(origin.url.rsplit(":", 1)[1])
        with mounted(node, os.path.join(work, "mnt"), writable=True) as root:
            write(root, "etc/os-collect-config.conf", OCC_CONF % (vm_node.HOST, port))
        yield dict(work=work, node=node, state=state, image_b=image_b, boot=boot, port=port,
                   metadata=Metadata(www, repo, "http://%s:%d/repo/" % (vm_node.HOST, port)),
                   image_a=element_image.image_id)


def configure_runs(console):
    return [m.groupdict() for m in re.finditer(CONFIGURE, console, re.M)]


def test_the_element_image_boots_and_updates_itself_in_place(world, tmp_path):
    md, image_a = world["metadata"], world["image_a"]
    md.serve(image_a, "first")
    vm = vm_node.VM(str(tmp_path), world["node"], world["state"], ports=[world["port"]],
                    kernel=world["boot"])
    with vm:
        vm.wait_for(r"Linux version", 120)
        # the agent is up at boot, and unchanged metadata is a no-op
        noop = vm.wait_for(r"image %s: noop" % re.escape(image_a), 600)
        vm.wait_for(CONFIGURE.replace("(?P<conf>.*)", "motd=first"), 120)
        # a setting changes, not the image: os-refresh-config renders it on the
        # read-only root, which the shipped hooks open for it and close again
        setting = len(vm.text())
        md.serve(image_a, "second")
        vm.wait_for(CONFIGURE.replace("(?P<conf>.*)", "motd=second"), 120, after=setting)
        vm.wait_for(r"/ read-only again", 60, after=setting)
        # the image changes
        changed = len(vm.text())
        md.serve(IMAGE_B, "second")
        done = vm.wait_for(r"image %s: (success|failed|refused)\b.*" % IMAGE_B, 900,
                           after=changed)
        assert done.group(1) == "success", done.group(0)
        # os-collect-config's own run for the change: before the agent took the lock,
        # or at its next poll after the update if it met the lock
        vm.wait_for(CONFIGURE.replace(r"(?P<action>[\w-]+)", "none"), 60, after=changed)
        powered_down = vm.power_down(120)
    console = vm.text()
    assert noop.start() > 0 and console.count("Linux version") == 1, \
        "the node rebooted:\n" + console[-3000:]
    assert_setting_rendered_on_a_window(configure_runs(console[setting:changed]))
    assert_update_sound(configure_runs(console[changed:]), console[changed:done.end()])
    with mounted(world["node"], os.path.join(world["work"], "after")) as node_root, \
            mounted(world["image_b"], os.path.join(world["work"], "b")) as b_root:
        assert_holds_image(node_root, b_root)
        with open(os.path.join(node_root, "etc/image_id")) as f:
            assert f.read().strip() == IMAGE_B
        # the deployer's configuration is the node's, not the image's: kept
        assert os.path.exists(os.path.join(node_root, "etc/os-collect-config.conf"))
        # the sync removed the rendered file (not image content); configure.d renders again
        with open(os.path.join(node_root, RENDERED)) as f:
            assert f.read() == "motd=second\n"
    assert powered_down, "the node did not power down in 120 s:\n" + console[-3000:]


def assert_setting_rendered_on_a_window(runs):
    print("\nconfigure phases for the setting: %s" % runs)
    assert runs and all(r["action"] == "none" and r["release"] == "A" for r in runs), runs
    # writable for os-refresh-config's configure.d, which rendered the new value
    assert {"root": "rw", "conf": "motd=second"} in [
        {"root": r["root"], "conf": r["conf"]} for r in runs], runs


def assert_update_sound(runs, update_log):
    print("configure phases for the change to B: %s" % runs)
    seen = [(r["release"], r["action"]) for r in runs]
    # the agent's own configure phase ran after its sync, on B's tree
    assert ("B", "in-place") in seen, runs
    # the agent's configure phase never ran on A's tree; os-collect-config's may have, if
    # it ran before the agent's sync (the lock keeps it out of the sync)
    assert ("A", "in-place") not in seen, runs
    # the read-only root: writable for the update, read-only again after it
    rw, ro = update_log.find("remounting / read-write"), update_log.find("remounted / read-only")
    assert 0 <= rw < ro, update_log[-3000:]


def assert_holds_image(node_root, image_root):
    """The node holds the image: content, type, mode, owner, xattrs, hard links, link
    targets and mtimes, apart from the node's own paths."""
    skip = manifest.Excluder(NODE_PATHS)
    node, _ = manifest.build(node_root, skip, skip_devices=False)
    image, _ = manifest.build(image_root, skip, skip_devices=False)
    assert sorted(set(node) ^ set(image)) == []
    for rel in RENDERED_INTO:
        node[rel] = node[rel]._replace(mtime=image[rel].mtime)
    assert sorted(rel for rel in image if node[rel] != image[rel]) == []
