"""The reboot path on a real machine: a QEMU VM booted by GRUB from a partitioned
disk, its root read-only, its agent the daemon from its image, polling metadata
and taking reboot slots from a real etcd on this machine (reached from the VM
through QEMU's user-mode network).

Image A runs bookworm's kernel. Image C brings bookworm-security's kernel with
a broken initramfs: the agent syncs it, boots it once, the kernel panics, GRUB
falls back to A's kernel, and the agent reports the failed boot, releases its
slot and does not try again. Image B brings the same new kernel intact: the
node reboots into it, checks it, makes it the default, drops the old kernel and
releases its slot. While the node is down its slot stays held, so a second node
of the group cannot take one. Image D rebuilds B's kernel under its name (the same
vmlinuz with bytes appended: another build to the agent) with a broken
initramfs: the agent copies the running build as <kernel>.update-agent-prev
before the sync, GRUB boots the new build once, it panics, GRUB falls back to
the copy, and the agent tells the builds apart by the file GRUB booted.
"""

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import time

import pytest

import debian_archive
import debian_roots
import etcd_local
import sandbox
from http_dir import HttpDir
import vm_node
from update_agent import coordination
from update_agent.coordination import stores

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("need_mounts")]
GROUP = "vm-test"
BANNER = r"Linux version (\S+)"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("vm"))
    www = os.path.join(work, "www")
    os.makedirs(www)
    with debian_archive.skip_if_unreachable():
        base_a, base_b = vm_node.vm_bases()
    server = HttpDir(www)
    # a port of this machine's loopback that is not forwarded: the guest must not reach it
    unforwarded = socket.socket()
    unforwarded.bind(("127.0.0.1", 0))
    unforwarded.listen(8)
    unforwarded.setblocking(False)
    lport = unforwarded.getsockname()[1]
    with etcd_local.etcd(os.path.join(work, "etcd")) as etcd_url:
        etcd_port = int(etcd_url.rsplit(":", 1)[1])
        host = "http://%s:%d" % (vm_node.HOST, server.port)
        conf = ("[agent]\nrequire_digest = true\n"
                "[daemon]\nmetadata_url = %s/meta.json\npoll_interval = 3\nsplay = 2\n"
                "[coordination]\nbackend = etcd3+http://%s:%d\ngroup = %s\nmax_holders = 1\n"
                % (host, vm_node.HOST, etcd_port, GROUP))
        wheels = debian_roots.build_wheels(os.path.join(work, "wheels"))
        root_a = os.path.join(work, "A")
        kernel_a = vm_node.node_tree(base_a, root_a, "A", wheels, conf)
        probes = [(vm_node.LOOPBACK_ALIAS, lport), (vm_node.HOST, lport),
                  (vm_node.DNS_PROXY, 53), (vm_node.LOOPBACK_ALIAS, etcd_port)]
        vm_node.add_net_probe(root_a, (vm_node.HOST, server.port), probes)
        root_b = os.path.join(work, "B")
        kernel_b = vm_node.node_tree(base_b, root_b, "B", wheels, conf)
        # C: B with an initramfs that is not one; this kernel cannot mount its root
        root_c = os.path.join(work, "C")
        subprocess.run(["cp", "-a", root_b, root_c], check=True)
        debian_roots.write(root_c, "etc/image_id", "debian-C\n")
        _break_initramfs(root_c, kernel_b)
        # D: B's kernel rebuilt under its name, with an initramfs that is not one
        root_d = os.path.join(work, "D")
        subprocess.run(["cp", "-a", root_b, root_d], check=True)
        debian_roots.write(root_d, "etc/image_id", "debian-D\n")
        with open(os.path.join(root_d, "boot/vmlinuz-" + kernel_b), "ab") as f:
            f.write(b"\0another build\n" * 64)
        _break_initramfs(root_d, kernel_b)
        with open(os.path.join(root_b, "boot/vmlinuz-" + kernel_b), "rb") as f:
            vmlinuz_b = hashlib.sha256(f.read()).hexdigest()
        images = {}
        for name, root in (("B", root_b), ("C", root_c), ("D", root_d)):
            disk = vm_node.make_disk(os.path.join(www, name + ".raw"), root,
                                     _size_mb(root), root_a)
            images[name] = {"image_id": "debian-" + name, "update_agent": {
                "image_url": "%s/%s.raw" % (host, name),
                "image_digest": sandbox.image_digest(disk)}}
        node_disk = vm_node.make_disk(os.path.join(work, "node.raw"), root_a, 2048, root_a)
        state_disk = os.path.join(work, "state.ext4")
        with open(state_disk, "wb") as f:
            f.truncate(4 << 30)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "ua-state", state_disk], check=True)
        for root in (root_a, root_b, root_c, root_d):
            shutil.rmtree(root)
        yield dict(work=work, www=www, images=images, etcd=etcd_url, kernel_a=kernel_a,
                   kernel_b=kernel_b, vmlinuz_b=vmlinuz_b, node_disk=node_disk, state_disk=state_disk,
                   ports=(server.port, etcd_port), probes=probes, unforwarded=unforwarded)
    unforwarded.close()
    server.close()


def _break_initramfs(root, release):
    """This kernel cannot mount its root: it panics."""
    with open(os.path.join(root, "boot/initrd.img-" + release), "wb") as f:
        f.write(b"not an initramfs\n" * 64)


def _size_mb(tree):
    used = int(subprocess.run(["du", "-sm", tree], check=True, capture_output=True,
                              text=True).stdout.split()[0])
    return used + used // 3 + 128


def _publish(world, name):
    path = os.path.join(world["www"], "meta.json")
    with open(path + ".tmp", "w") as f:
        json.dump(world["images"][name], f)
    os.replace(path + ".tmp", path)


def _group(world):
    slots = coordination.RebootSlots(stores.for_url(world["etcd"]), GROUP, 1, "test", time.time)
    return slots.state()


def _banners(vm):
    return [m.group(1) for m in re.finditer(BANNER, vm.text())]


def test_reboot_into_a_new_kernel_with_fallback_and_fleet_slot(world, tmp_path):
    ka, kb = world["kernel_a"], world["kernel_b"]
    assert ka != kb
    _publish(world, "C")
    other = coordination.RebootSlots(stores.for_url(world["etcd"]), GROUP, 1, "node-2", time.time)
    with vm_node.VM(str(tmp_path), world["node_disk"], world["state_disk"],
                    ports=world["ports"]) as vm:
        vm.wait_for(BANNER, 120)
        assert _banners(vm) == [ka]
        _assert_only_forwarded_ports_reached(world, vm)

        # C: synced, booted once into its kernel, which panics; GRUB falls back
        vm.wait_for(r"Linux version %s" % re.escape(kb), 600)
        holders = _group(world)["holders"]
        assert len(holders) == 1, holders        # held across the reboot...
        granted, why = other.take()
        assert not granted, why                  # ...so no second node of the group goes down
        at = vm.wait_for(r"Kernel panic", 120).end()
        vm.wait_for(r"Linux version %s" % re.escape(ka), 120, after=at)
        vm.wait_for(r"image debian-C: failed: .*came back on kernel %s, not the planned %s"
                    % (re.escape(ka), re.escape(kb)), 300, after=at)
        state = _group(world)
        assert state["holders"] == {} and state["failures"] == 1, state
        # no loop: the daemon polls on (every 3 s) but does not reboot again
        time.sleep(20)
        assert _banners(vm) == [ka, kb, ka], _banners(vm)
        assert re.search(r"image debian-C: refused: .*not trying again on its own", vm.text())

        # B: the same kernel, intact
        at = len(vm.text())
        _publish(world, "B")
        vm.wait_for(r"Linux version %s" % re.escape(kb), 600, after=at)
        assert len(_group(world)["holders"]) == 1
        vm.wait_for(r"image debian-B: success", 300, after=at)
        assert _group(world)["holders"] == {}
        assert _banners(vm) == [ka, kb, ka, kb]

        # D: kernel kb rebuilt under its name; the new build boots once and panics,
        # GRUB falls back to the copy the agent made of the running build
        at = len(vm.text())
        _publish(world, "D")
        prev = kb + ".update-agent-prev"
        at = vm.wait_for(r"Command line: BOOT_IMAGE=/boot/vmlinuz-%s " % re.escape(kb), 600,
                         after=at).end()
        at = vm.wait_for(r"Kernel panic", 120, after=at).end()
        at = vm.wait_for(r"Command line: BOOT_IMAGE=/boot/vmlinuz-%s " % re.escape(prev), 120,
                         after=at).start()
        vm.wait_for(r"image debian-D: failed: .*came back on kernel %s, the copy of the "
                    r"previous build" % re.escape(prev), 300, after=at)
        assert _group(world)["holders"] == {}
        time.sleep(10)
        assert _banners(vm) == [ka, kb, ka, kb, kb, kb], _banners(vm)
    _inspect(world, kb, ka, tmp_path)


def _assert_only_forwarded_ports_reached(world, vm):
    """The guest reached the metadata server, and nothing else: not this machine's
    loopback, not a port that is not forwarded, not QEMU's DNS proxy."""
    vm.wait_for(r"netprobe: done", 300)
    for host, port in world["probes"]:
        line = re.search(r"netprobe: %s:%d (\w+)" % (re.escape(host), port), vm.text())
        assert line and line.group(1) == "unreachable", (host, port, line and line.group(0))
    try:
        conn, peer = world["unforwarded"].accept()
    except BlockingIOError:
        return
    conn.close()
    pytest.fail("the guest reached an unforwarded port of this machine, from %s" % (peer,))


def _inspect(world, kb, ka, tmp_path):
    """The powered-off node's disks: B's kernel proven (A's gone), then image D
    committed, its boot failed, and the copy of B's build kept as the default."""
    root, state = str(tmp_path / "root"), str(tmp_path / "state")
    os.makedirs(root)
    os.makedirs(state)
    subprocess.run(["mount", "-o", "ro,loop,offset=%d" % vm_node.DISK_OFFSET,
                    world["node_disk"], root], check=True)
    subprocess.run(["mount", "-o", "loop", world["state_disk"], state], check=True)
    try:
        with open(os.path.join(root, "etc/image_id")) as f:
            assert f.read().strip() == "debian-D"
        prev = kb + ".update-agent-prev"
        boot = sorted(os.listdir(os.path.join(root, "boot")))
        assert not any(ka in name for name in boot), boot
        assert {"vmlinuz-" + kb, "vmlinuz-" + prev, "initrd.img-" + prev} <= set(boot), boot
        with open(os.path.join(root, "boot/vmlinuz-" + prev), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == world["vmlinuz_b"], "B's build"
        assert not os.path.exists(os.path.join(root, "usr/lib/modules", ka))
        with open(os.path.join(root, "boot/grub/grubenv"), encoding="ascii", errors="replace") as f:
            env = f.read()
        assert re.search(r"^saved_entry=.*%s" % re.escape(prev), env, re.M), env
        with open(os.path.join(root, "boot/grub/grub.cfg")) as f:
            assert ka not in f.read(), "no menu entry left for the removed kernel"
        with open(os.path.join(state, "history.jsonl")) as f:
            history = [json.loads(line) for line in f]
        results = [(h.get("image_id"), h.get("result")) for h in history]
        assert ("debian-B", "success") in results and ("debian-D", "failed") in results, results
    finally:
        subprocess.run(["umount", root])
        subprocess.run(["umount", state])
