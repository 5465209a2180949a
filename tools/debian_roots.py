"""Realistic node roots from Debian's archive, for the whole-node test and benchmarks.

Root A: `debootstrap --variant=minbase` of bookworm (main suite only) with
systemd, dbus, python3 and nginx-light, the agent installed in /opt/update-agent
(from wheels built on this machine: no PyPI access from inside the chroot), and
two services that name their image: nginx on 127.0.0.1:18080 and a Python
HTTP service (pysvc.service) on 127.0.0.1:18081.

Root B: A upgraded from bookworm-updates and bookworm-security (a realistic
"newer image": changed libraries, several hundred to thousands of paths), one
package added, pysvc's own module and its unit file changed, nginx's page
changed.

The debootstrap and the upgrade are cached under a cache directory (default
/var/cache/update-agent-tests), keyed by the day, so a test run costs them once
a day; the agent (this checkout's) and the services go in at each use. The
mirrors are read from apt's own sources on this machine; nothing names a host.
Must run as root inside a private mount namespace (the chroot bind-mounts
/proc and /dev).
"""

import datetime
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CACHE = "/var/cache/update-agent-tests"
RELEASE = "bookworm"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "nginx-light",
            "ca-certificates", "iproute2", "procps", "rsync", "util-linux", "mount")
ADDED_IN_B = ("less",)
NGINX_PORT, PYSVC_PORT = 18080, 18081

PYSVC_SERVER = '''\
import http.server
import os

import content  # the service's own module: B changes it


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("%%s %%s\\n" %% (content.PAGE, os.environ.get("PYSVC_VARIANT", ""))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", %d), Handler).serve_forever()
''' % PYSVC_PORT

PYSVC_UNIT = '''\
[Unit]
Description=a Python HTTP service that names its image
After=network.target

[Service]
ExecStart=/usr/bin/python3 /opt/pysvc/server.py
WorkingDirectory=/opt/pysvc
Restart=on-failure
%s
[Install]
WantedBy=multi-user.target
'''

NGINX_SITE = '''\
server {
    listen 127.0.0.1:%d default_server;
    root /var/www/html;
    index index.html;
}
''' % NGINX_PORT


def run(argv, **kw):
    return subprocess.run(argv, check=True, text=True, capture_output=True, **kw)


def mirrors():
    """(main, security) archive URIs, as apt on this machine has them."""
    text = ""
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*")):
        try:
            with open(path) as f:
                text += f.read() + "\n"
        except OSError:
            pass
    uris = re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M)
    main = next((u for u in uris if "security" not in u), None)
    security = next((u for u in uris if "security" in u), None)
    if not main:
        raise RuntimeError("no Debian mirror in apt's sources")
    return main.rstrip("/"), (security or main + "-security").rstrip("/")


class Chroot:
    """/proc, /dev and /sys bind-mounted, services kept from starting (policy-rc.d)."""

    def __init__(self, root):
        self.root = root

    def __enter__(self):
        for d in ("proc", "dev", "sys"):
            run(["mount", "--rbind", "/" + d, os.path.join(self.root, d)])
        with open(os.path.join(self.root, "usr/sbin/policy-rc.d"), "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(os.path.join(self.root, "usr/sbin/policy-rc.d"), 0o755)
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", os.path.join(self.root, "tmp/host-ca.crt"))
        return self

    def run(self, *argv):
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
               "LC_ALL": "C"}
        return run(["chroot", self.root] + list(argv), env=env)

    def __exit__(self, *exc):
        os.unlink(os.path.join(self.root, "usr/sbin/policy-rc.d"))
        os.unlink(os.path.join(self.root, "tmp/host-ca.crt"))
        for d in ("sys", "dev", "proc"):
            subprocess.run(["umount", "-R", "-l", os.path.join(self.root, d)], capture_output=True)


def write(root, rel, text, mode=0o644):
    path = os.path.join(root, rel.lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def install_agent(root, wheels):
    """The agent in /opt/update-agent, from wheels built on the host."""
    target = os.path.join(root, "tmp/wheels")
    shutil.copytree(wheels, target)
    with Chroot(root) as c:
        c.run("python3", "-m", "venv", "/opt/update-agent")
        c.run("/opt/update-agent/bin/pip", "install", "-q", "--no-index", "--find-links",
              "/tmp/wheels", "update-agent")
    shutil.rmtree(target)


def build_wheels(dest):
    os.makedirs(dest, exist_ok=True)
    run([sys.executable, "-m", "pip", "wheel", "-q", "-w", dest, PROJECT])
    return dest


def services(root, variant):
    write(root, "var/www/html/index.html", "nginx image %s\n" % variant)
    write(root, "etc/nginx/sites-available/default", NGINX_SITE)
    write(root, "opt/pysvc/server.py", PYSVC_SERVER)
    write(root, "opt/pysvc/content.py", 'PAGE = "pysvc image %s"\n' % variant)
    env = "Environment=PYSVC_VARIANT=unit-B\n" if variant == "B" else ""
    write(root, "etc/systemd/system/pysvc.service", PYSVC_UNIT % env)
    wants = os.path.join(root, "etc/systemd/system/multi-user.target.wants")
    os.makedirs(wants, exist_ok=True)
    link = os.path.join(wants, "pysvc.service")
    if not os.path.lexists(link):
        os.symlink("/etc/systemd/system/pysvc.service", link)
    write(root, "etc/image_id", "debian-%s\n" % variant)
    for d in ("srv/images", "srv/B"):  # where a test binds images in
        os.makedirs(os.path.join(root, d), exist_ok=True)
    # the whole-node test hands image B in as a directory bound at /srv/B: the
    # operator allows file:// images there
    write(root, "etc/update-agent/update-agent.conf",
          "[agent]\nrequire_digest = true\ndirectory_images = /srv\nfile_image_dirs = /srv\n")
    # a read-only root: nginx logs to the journal and keeps its temp files on a tmpfs
    conf = os.path.join(root, "etc/nginx/nginx.conf")
    with open(conf) as f:
        text = f.read()
    text = re.sub(r"error_log [^;]+;", "error_log stderr;", text)
    text = re.sub(r"access_log [^;]+;", "access_log off;", text)
    with open(conf, "w") as f:
        f.write(text)
    # no getty, login manager or networkd waits in a container without a console or network
    for unit in ("getty@tty1.service", "systemd-networkd-wait-online.service",
                 "systemd-logind.service"):
        mask = os.path.join(root, "etc/systemd/system", unit)
        if not os.path.lexists(mask):
            os.symlink("/dev/null", mask)


def build_base_a(dest):
    main, _security = mirrors()
    run(["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES), RELEASE, dest, main])
    write(dest, "etc/apt/sources.list", "deb %s %s main\n" % (main, RELEASE))
    with open(os.path.join(dest, "etc/machine-id"), "w"):
        pass  # empty: systemd makes a transient one at boot


def build_base_b(a_root, dest):
    main, security = mirrors()
    run(["cp", "-a", a_root, dest])
    write(dest, "etc/apt/sources.list",
          "deb {m} {r} main\ndeb {m} {r}-updates main\ndeb {s} {r}-security main\n".format(
              m=main, s=security, r=RELEASE))
    with Chroot(dest) as c:
        c.run("apt-get", "-o", "Acquire::https::CaInfo=/tmp/host-ca.crt", "update", "-qq")
        c.run("apt-get", "-y", "-qq", "-o", "Dpkg::Options::=--force-confold", "upgrade")
        c.run("apt-get", "-y", "-qq", "install", *ADDED_IN_B)
        c.run("apt-get", "clean")
    for stale in glob.glob(os.path.join(dest, "var/lib/apt/lists/*_*")):
        os.unlink(stale)


def base_roots(cache_dir=DEFAULT_CACHE):
    """(base A, base B): debootstrap and upgrade, built today or taken from the cache."""
    key = hashlib.sha256(repr((RELEASE, PACKAGES, ADDED_IN_B)).encode()).hexdigest()[:8]
    stamp = "%s-%s" % (datetime.date.today().isoformat(), key)
    base = os.path.join(cache_dir, stamp)
    a, b = os.path.join(base, "A"), os.path.join(base, "B")
    done = os.path.join(base, "complete")
    if not os.path.exists(done):
        for old in glob.glob(os.path.join(cache_dir, "*")):
            shutil.rmtree(old, ignore_errors=True)
        os.makedirs(base, exist_ok=True)
        build_base_a(a)
        build_base_b(a, b)
        open(done, "w").close()
    return a, b


def running_kernel(root):
    """Both images carry the kernel this machine runs, as a node's image carries its
    node's kernel. This VM's kernel is not Debian's and has no files here, so the
    same stand-in vmlinuz and module tree, named for the running release, go in."""
    release = os.uname().release
    source = "/boot/vmlinuz-" + release
    if os.path.isfile(source):
        shutil.copy2(source, os.path.join(root, "boot", "vmlinuz-" + release))
    else:
        write(root, "boot/vmlinuz-" + release, "stand-in for the running kernel %s\n" % release)
    write(root, "usr/lib/modules/%s/modules.dep" % release, "")


def node_roots(workdir, cache_dir=DEFAULT_CACHE):
    """Roots A and B under workdir, with this checkout's agent and the services."""
    base_a, base_b = base_roots(cache_dir)
    wheels = build_wheels(os.path.join(workdir, "wheels"))
    out = []
    for variant, base in (("A", base_a), ("B", base_b)):
        root = os.path.join(workdir, variant)
        run(["cp", "-a", base, root])
        install_agent(root, wheels)
        services(root, variant)
        running_kernel(root)
        os.makedirs(os.path.join(root, "var/lib/update-agent"), exist_ok=True)
        out.append(root)
    return tuple(out)


if __name__ == "__main__":
    print("\n".join(node_roots(*sys.argv[1:])))
