"""A whole node in a QEMU virtual machine, booted by GRUB from a partitioned disk,
for the test of the reboot path: a real reboot into a new kernel, GRUB's
boot-once, the fallback when the new kernel does not boot.

The roots are the whole-node test's Debian roots (debian_roots) with a
Debian kernel and GRUB added: root A with bookworm's kernel, root B with
bookworm-security's (a different ABI, so the image's kernel differs from the
running one). Module trees are pruned to what a virtio VM needs, which keeps
the images small; the initramfs is made before the pruning, with everything.

A disk is made without device-mapper, kpartx or grub-install, none of which
work here: an MBR partition table (sfdisk on the file), the ext4 root written
at the partition's offset (mkfs.ext4 -E offset= -d), and GRUB's boot.img and
core.img (grub-mkimage, run in root A's chroot) written where grub-install
would put them: boot.img's code in the MBR, core.img in the gap before the
partition, whose default block list already points there.

A VM can also boot a bare filesystem image with QEMU loading its kernel and initrd
(DirectBoot), as the booted-image test boots the element's output.
"""

import dataclasses
import glob
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time

import debian_roots
from debian_roots import Chroot, run, write

DISK_OFFSET = 1 << 20        # the partition starts at 1 MiB, as partitioners put it
GRUB_MODULES = ("biosdisk", "part_msdos", "ext2", "normal", "linux", "search", "search_label",
                "loadenv", "echo", "test", "gzio", "configfile", "serial", "terminal")
# built into core.img: GRUB on the serial console too (the VM has no screen), then
# the prefix's grub.cfg as usual
EARLY_CFG = """\
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set root=(hd0,msdos1)
set prefix=(hd0,msdos1)/boot/grub
"""
# what a virtio VM with an ext4 root does not need: most of a distribution kernel's size
PRUNE = ("drivers/gpu", "drivers/media", "drivers/infiniband", "drivers/staging",
         "drivers/net/wireless", "drivers/net/ethernet", "drivers/usb", "drivers/hid",
         "drivers/iio", "drivers/isdn", "drivers/mtd", "drivers/bluetooth", "drivers/scsi",
         "drivers/input", "drivers/hwmon", "drivers/platform", "drivers/thunderbolt",
         "drivers/video", "drivers/net/can", "drivers/atm", "drivers/md", "drivers/target",
         "drivers/nvme", "drivers/ata", "sound", "net/wireless", "net/mac80211", "net/bluetooth",
         "net/netfilter", "net/ipv4/netfilter", "net/ipv6/netfilter", "fs/btrfs", "fs/xfs",
         "fs/ocfs2", "fs/gfs2", "fs/nfs", "fs/smb", "fs/ceph", "fs/f2fs", "fs/nilfs2",
         "fs/ubifs", "fs/bcachefs", "fs/jfs", "fs/reiserfs", "fs/nfsd", "fs/dlm")


def kernel_of(root):
    """The one kernel release in root/boot."""
    found = sorted(os.path.basename(p)[len("vmlinuz-"):]
                   for p in glob.glob(os.path.join(root, "boot/vmlinuz-*")))
    if len(found) != 1:
        raise RuntimeError("%s/boot has kernels %s, want exactly one" % (root, found))
    return found[0]


def element_packages():
    """The packages the update-agent element installs (its package-installs.yaml)."""
    path = os.path.join(debian_roots.PROJECT, "elements/update-agent/package-installs.yaml")
    with open(path) as f:
        return [m.group(1) for m in re.finditer(r"^([a-z0-9][a-z0-9.+-]*):", f.read(), re.M)]


def _add_kernel(root, sources):
    write(root, "etc/apt/sources.list", sources)
    # no grub.cfg during the install: the kernel's zz-update-grub hook would run
    # update-grub, which cannot probe a device in a chroot
    with Chroot(root) as c:
        c.run("apt-get", "-o", "Acquire::https::CaInfo=/tmp/host-ca.crt", "update", "-qq")
        c.run("apt-get", "-y", "-qq", "--no-install-recommends", "install", "linux-image-amd64",
              "initramfs-tools", "grub-pc-bin", "grub2-common", *element_packages())
        c.run("apt-get", "clean")
        release = kernel_of(root)
        for rel in PRUNE:
            shutil.rmtree(os.path.join(root, "usr/lib/modules", release, "kernel", rel),
                          ignore_errors=True)
        c.run("depmod", release)
    for stale in glob.glob(os.path.join(root, "var/lib/apt/lists/*_*")):
        os.unlink(stale)
    return release


def vm_bases(cache_dir=debian_roots.DEFAULT_CACHE):
    """(base A, base B): the Debian bases with a kernel and GRUB, cached beside them."""
    base_a, base_b = debian_roots.base_roots(cache_dir)
    out = []
    main, security = debian_roots.mirrors()
    r = debian_roots.RELEASE
    for name, base, sources in (
            ("vmA", base_a, "deb %s %s main\n" % (main, r)),
            ("vmB", base_b, "deb {m} {r} main\ndeb {m} {r}-updates main\ndeb {s} {r}-security main\n"
             .format(m=main, s=security, r=r))):
        dest = os.path.join(os.path.dirname(base_a), name)
        done = "%s.complete-%s" % (dest, hashlib.sha256(" ".join(element_packages()).encode()).hexdigest()[:8])
        if not os.path.exists(done):
            shutil.rmtree(dest, ignore_errors=True)
            run(["cp", "-a", base, dest])
            _add_kernel(dest, sources)
            open(done, "w").close()
        out.append(dest)
    return tuple(out)


FSTAB = """\
LABEL=cloudimg-rootfs  /                     ext4   ro,errors=remount-ro  0 1
LABEL=ua-state         /var/lib/update-agent ext4   defaults              0 2
tmpfs                  /tmp                  tmpfs  defaults              0 0
tmpfs                  /var/log              tmpfs  defaults              0 0
tmpfs                  /var/lib/nginx        tmpfs  defaults              0 0
"""
# QEMU's user-mode network, restricted: the guest is 10.0.2.15 and reaches
# nothing but the ports the test forwards, at HOST, each to the same port on
# this machine's 127.0.0.1 (guestfwd's command form: one socat per connection,
# as etcd's clients open several)
NETWORK = "[Match]\nName=en*\n\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\n"
HOST = "10.0.2.100"
# where an unrestricted user network takes the guest: this machine's loopback
# (10.0.2.2) and QEMU's DNS proxy (10.0.2.3)
LOOPBACK_ALIAS, DNS_PROXY = "10.0.2.2", "10.0.2.3"
# the guest tries what must be unreachable once a forwarded port answers (so its
# network is up), and says so on the console
PROBE = """\
#!/usr/bin/python3
import socket, sys, time
up, *others = [(h, int(p)) for h, p in (a.rsplit(":", 1) for a in sys.argv[1:])]
for _ in range(120):
    try:
        socket.create_connection(up, timeout=2).close()
        break
    except OSError:
        time.sleep(1)
else:
    print("netprobe: %s:%d never answered" % up, flush=True)
    sys.exit(1)
for target in others:
    try:
        socket.create_connection(target, timeout=5).close()
        print("netprobe: %s:%d reached" % target, flush=True)
    except OSError as e:
        print("netprobe: %s:%d unreachable (%s)" % (target + (e,)), flush=True)
print("netprobe: done", flush=True)
"""
PROBE_UNIT = """\
[Unit]
Description=Show which addresses the guest can reach
After=systemd-networkd.service

[Service]
Type=oneshot
StandardOutput=journal+console
ExecStart=/usr/local/sbin/netprobe {targets}

[Install]
WantedBy=multi-user.target
"""


def forwards(ports):
    """QEMU's -netdev for a guest that reaches only these ports of 127.0.0.1, at HOST."""
    rules = ["guestfwd=tcp:%s:%d-cmd:socat - TCP:127.0.0.1:%d" % (HOST, p, p) for p in ports]
    return ",".join(["user,id=n0,restrict=on"] + rules)


def add_net_probe(root, up, others):
    """A boot-time unit that connects to up (a forwarded host:port), then tries others."""
    write(root, "usr/local/sbin/netprobe", PROBE, mode=0o755)
    targets = " ".join("%s:%d" % t for t in (up,) + tuple(others))
    write(root, "etc/systemd/system/netprobe.service", PROBE_UNIT.format(targets=targets))
    _enable(root, "netprobe.service")
# the agent's log lines on the serial console, where the test reads them
JOURNALD = "[Journal]\nForwardToConsole=yes\nMaxLevelConsole=info\n"
DEFAULT_GRUB = ('GRUB_TIMEOUT=0\nGRUB_DISTRIBUTOR=Debian\nGRUB_CMDLINE_LINUX="console=ttyS0 panic=5"\n'
                'GRUB_DISABLE_OS_PROBER=true\nGRUB_TERMINAL=console\n')
# what an image builder writes for the first boot; the agent's GRUB hook
# regenerates it with update-grub on the node
FIRST_GRUB_CFG = """\
set timeout=0
set default=0
menuentry 'Debian GNU/Linux, with Linux {k} (first boot)' {{
    insmod ext2
    search --no-floppy --label --set=root cloudimg-rootfs
    linux /boot/vmlinuz-{k} root=LABEL=cloudimg-rootfs ro console=ttyS0 panic=5
    initrd /boot/initrd.img-{k}
}}
"""


def _enable(root, unit, target="multi-user.target"):
    wants = os.path.join(root, "etc/systemd/system", target + ".wants")
    os.makedirs(wants, exist_ok=True)
    link = os.path.join(wants, unit)
    if not os.path.lexists(link):
        for d in ("usr/lib/systemd/system", "lib/systemd/system", "etc/systemd/system"):
            if os.path.exists(os.path.join(root, d, unit)):
                os.symlink("/" + d + "/" + unit, link)
                return
        raise RuntimeError("no unit %s in %s" % (unit, root))


def node_tree(base, dest, variant, wheels, agent_conf):
    """A VM node's root from a base: the agent as its element installs it (venv,
    unit, boot-loader hook, GRUB_DEFAULT=saved), the services, a read-only root."""
    run(["cp", "-a", base, dest])
    debian_roots.install_agent(dest, wheels)
    debian_roots.services(dest, variant)
    write(dest, "etc/update-agent/update-agent.conf", agent_conf)
    write(dest, "etc/fstab", FSTAB)
    write(dest, "etc/hostname", "vm-node\n")
    write(dest, "etc/systemd/network/10-user.network", NETWORK)
    write(dest, "etc/systemd/journald.conf.d/console.conf", JOURNALD)
    write(dest, "etc/default/grub", DEFAULT_GRUB)
    element = os.path.join(debian_roots.PROJECT, "elements/update-agent/static")
    for rel in ("etc/default/grub.d/update-agent.cfg",):
        shutil.copy(os.path.join(element, rel), os.path.join(dest, rel))
    hooks = os.path.join(dest, "usr/libexec/os-refresh-config/bootloader.d")
    os.makedirs(hooks, exist_ok=True)
    for hook in glob.glob(os.path.join(debian_roots.PROJECT, "hooks/bootloader.d/*")):
        shutil.copy(hook, hooks)
        os.chmod(os.path.join(hooks, os.path.basename(hook)), 0o755)
    shutil.copy(os.path.join(debian_roots.PROJECT, "systemd/update-agent.service"),
                os.path.join(dest, "etc/systemd/system/update-agent.service"))
    _enable(dest, "update-agent.service")
    _enable(dest, "systemd-networkd.service")
    _enable(dest, "systemd-networkd.socket", "sockets.target")
    # the images leave machine-id empty, as diskimage-builder does: with a
    # read-only root, systemd makes up a new one at every boot
    write(dest, "etc/machine-id", "")
    kernel = kernel_of(dest)
    grub = os.path.join(dest, "boot/grub")
    shutil.copytree(os.path.join(dest, "usr/lib/grub/i386-pc"), os.path.join(grub, "i386-pc"),
                    dirs_exist_ok=True)
    write(dest, "boot/grub/grub.cfg", FIRST_GRUB_CFG.format(k=kernel))
    os.makedirs(os.path.join(dest, "var/lib/update-agent"), exist_ok=True)
    return kernel


def make_disk(path, tree, size_mb, grub_root):
    """A partitioned disk booting `tree` with GRUB (BIOS), from grub_root's GRUB."""
    part = size_mb << 20
    with open(path, "wb") as f:
        f.truncate(DISK_OFFSET + part)
    run(["mkfs.ext4", "-q", "-F", "-L", "cloudimg-rootfs", "-E", "offset=%d" % DISK_OFFSET,
         "-d", tree, path, "%dk" % (part >> 10)])
    run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", path],
        input="start=%d, type=83, bootable\n" % (DISK_OFFSET // 512))
    core = os.path.join(grub_root, "tmp/core.img")
    write(grub_root, "tmp/early.cfg", EARLY_CFG)
    run(["chroot", grub_root, "grub-mkimage", "-O", "i386-pc", "-o", "/tmp/core.img",
         "-c", "/tmp/early.cfg", "-p", "(hd0,msdos1)/boot/grub"] + list(GRUB_MODULES))
    os.unlink(os.path.join(grub_root, "tmp/early.cfg"))
    with open(core, "rb") as f:
        core_img = f.read()
    os.unlink(core)
    if len(core_img) > DISK_OFFSET - 512:
        raise RuntimeError("GRUB core.img is %d bytes: it does not fit before the partition"
                           % len(core_img))
    with open(os.path.join(grub_root, "usr/lib/grub/i386-pc/boot.img"), "rb") as f:
        boot_img = f.read()
    with open(path, "r+b") as f:
        f.write(boot_img[:440])   # the code; the partition table after it stays
        f.seek(512)
        f.write(core_img)         # sector 1: diskboot.img's default block list reads on from 2
    return path


@dataclasses.dataclass(frozen=True)
class DirectBoot:
    """QEMU loads this kernel and initrd itself (no boot loader on the disk)."""
    vmlinuz: str
    initrd: str
    cmdline: str

    def argv(self):
        return ["-kernel", self.vmlinuz, "-initrd", self.initrd, "-append", self.cmdline]


class VM:
    """qemu-system-x86_64 on a disk (and a state disk), serial console to a file,
    user-mode networking restricted to `ports` of 127.0.0.1 (reached at HOST). Emulated (TCG) by default: this machine's /dev/kvm is
    nested and a guest kernel hangs on it right after "Probing EDD";
    UPDATE_AGENT_VM_ACCEL=kvm where KVM works."""

    def __init__(self, workdir, disk, state_disk=None, ports=(), memory_mb=1024, kernel=None):
        self.workdir, self.disk, self.state_disk = workdir, disk, state_disk
        self.ports = tuple(ports)  # of 127.0.0.1, the only ones the guest reaches
        self.memory_mb = memory_mb
        self.kernel = kernel  # a DirectBoot, or None for the disk's boot loader
        self.console = os.path.join(workdir, "console.log")
        self.proc = None

    def start(self):
        accel = os.environ.get("UPDATE_AGENT_VM_ACCEL", "tcg")
        argv = ["qemu-system-x86_64", "-machine", "pc,accel=" + accel,
                "-m", str(self.memory_mb), "-smp", "2", "-display", "none", "-vga", "none",
                "-serial", "file:" + self.console, "-no-user-config", "-nodefaults",
                "-monitor", "stdio",  # its commands on the pipe to QEMU's stdin
                "-netdev", forwards(self.ports), "-device", "virtio-net-pci,netdev=n0"]
        for disk in (self.disk, self.state_disk):
            if disk:
                argv += ["-drive", "file=%s,format=raw,if=virtio,cache=unsafe" % disk]
        if self.kernel:
            argv += self.kernel.argv()
        self.log = open(os.path.join(self.workdir, "qemu.log"), "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.PIPE, start_new_session=True)
        return self

    def text(self):
        try:
            with open(self.console, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_for(self, pattern, timeout, after=0):
        """The first match of pattern in the console from offset `after`."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.M)
        while time.monotonic() < deadline:
            m = rx.search(self.text(), after)
            if m:
                return m
            if self.proc.poll() is not None:
                raise RuntimeError("qemu exited (%s): %s" % (self.proc.returncode, self.tail()))
            time.sleep(0.2)
        raise TimeoutError("no %r on the console in %ds; the console ends:\n%s"
                           % (pattern, timeout, self.tail()))

    def tail(self, n=4000):
        return self.text()[-n:]

    def power_down(self, timeout):
        """Press the power button (ACPI) and wait for the guest to shut down: True if it
        did within timeout seconds."""
        self.proc.stdin.write(b"system_powerdown\n")
        self.proc.stdin.flush()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        self.log.close()
        return True

    def stop(self):
        """Pull the plug: the node has no power-button handler (logind is masked), its
        root is read-only and the agent's state is written atomically with fsync."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.stdin.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
