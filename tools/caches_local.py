"""Throwaway caching proxies on 127.0.0.1 in front of an object repository's origin,
for tests and benchmarks: Debian's squid as the nodes' forward proxy, and nginx
(nginx-core) as a reverse site cache with slice and proxy_cache_lock.

Each writes the very configuration docs/caching.md shows (SQUID_CONF, NGINX_SITE,
rendered there with DOC_SQUID and DOC_NGINX; tests/unit/test_caching_doc.py keeps the
two identical), with this machine's ports and paths. Both run in the foreground as
children of the caller, every file under work_dir, and are stopped by PID.
"""

import contextlib
import dataclasses
import os
import pwd
import subprocess
import urllib.parse

from etcd_local import free_port, wait_port

SQUID_CONF = """\
# /etc/squid/squid.conf: the forward proxy of one rack or site for update-agent
# repositories (docs/caching.md says why each line is there)
http_port {listen}
visible_hostname {hostname}
acl nodes src {nodes}
acl repository dstdomain {repository}
http_access allow nodes repository
http_access deny all

# whole packs and objects, of any size, kept on disk (before cache_dir: it takes
# its largest object from here)
maximum_object_size {max_object}
cache_dir aufs {cache_dir} {cache_mb} 16 256
cache_mem {cache_mem}
maximum_object_size_in_memory 8 MB
cache_replacement_policy heap LFUDA

# a Range miss fetches the whole file once, caches it, and serves every range from it
range_offset_limit none repository
# a client that goes away does not abort a fetch others will need
quick_abort_min -1 KB
# concurrent misses for one URL wait for the one fetch
collapsed_forwarding on

# the origin's Cache-Control wins; these are for an origin that sends none
refresh_pattern /(objects|packs|manifests|indexes|xattrs)/ 525600 100% 525600
refresh_pattern /images/[^/]+\\.json$ 0 0% 1
refresh_pattern . 0 20% 4320

logformat repo %ts.%03tu %>a %Ss/%>Hs %<st %rm %ru %{{Range}}>h
access_log {logs}/access.log repo
cache_log {logs}/cache.log
cache_store_log none
pid_filename {run}/squid.pid
coredump_dir {cache_dir}
cache_effective_user proxy
shutdown_lifetime {shutdown}
"""

# what docs/caching.md shows for squid: a site's values
DOC_SQUID = dict(listen="3128", hostname="cache.rack1", nodes="10.0.0.0/8",
                 repository="repo.example", max_object="8 GB", cache_dir="/var/spool/squid",
                 cache_mb="100000", cache_mem="1024 MB", logs="/var/log/squid",
                 run="/run", shutdown="30 seconds")

NGINX_SITE = """\
# /etc/nginx/conf.d/update-agent-cache.conf: the reverse cache of one rack or site
# in front of an update-agent repository (docs/caching.md says why each line is there)
proxy_cache_path {cache_dir} levels=1:2 keys_zone=update_agent:64m
                 max_size={max_size} inactive=365d use_temp_path=off;

upstream update_agent_origin {{
    server {origin};
    keepalive 16;
}}

server {{
    listen {listen};

    proxy_http_version 1.1;
    proxy_cache update_agent;
    proxy_cache_lock on;
    proxy_cache_lock_timeout 120s;
    proxy_cache_lock_age 120s;
    proxy_cache_use_stale updating error timeout;
    add_header X-Cache-Status $upstream_cache_status;

    # the one file that is not named by its content: kept briefly, revalidated
    location ~ /images/[^/]+\\.json$ {{
        proxy_pass {origin_url};
        proxy_set_header Host {origin_host};
        proxy_set_header Connection "";
        proxy_cache_valid 200 10s;
        proxy_cache_valid 404 5s;
        proxy_cache_revalidate on;
    }}

    # everything else is immutable: cached in 1 MiB slices, whatever the client's Range
    location / {{
        slice 1m;
        proxy_pass {origin_url};
        proxy_set_header Host {origin_host};
        proxy_set_header Connection "";
        proxy_set_header Range $slice_range;
        proxy_cache_key $uri$slice_range;
        proxy_cache_valid 200 206 365d;
        proxy_cache_valid 404 5s;
    }}
}}
"""

DOC_NGINX = dict(cache_dir="/var/cache/nginx/update-agent", max_size="100g",
                 origin="repo.example:80", origin_host="repo.example",
                 origin_url="http://update_agent_origin", listen="80")

# the main configuration around the site file: this machine's plumbing only
NGINX_MAIN = """\
daemon off;
master_process on;
worker_processes 2;
user root;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format cached "$request_method\\t$uri\\t$status\\t$body_bytes_sent\\t$http_range\\t$upstream_cache_status";
    access_log {work}/access.log cached;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    keepalive_requests 100000;
    include {work}/update-agent-cache.conf;
}}
"""


def render(template, values, without=()):
    """The configuration text, leaving out the lines of the directives in `without`
    (to see what a default costs)."""
    text = template.format(**values)
    return "".join(line for line in text.splitlines(True)
                   if not any(line.strip().startswith(d + " ") for d in without))


@dataclasses.dataclass(frozen=True)
class Logged:
    """One request a cache served, as its access log tells it."""

    method: str
    path: str
    status: int
    cache: str        # squid's TCP_MISS, TCP_HIT, ...; nginx's MISS, HIT, ...
    body_bytes: int   # squid counts headers too
    range: str


class Squid:
    def __init__(self, url, work):
        self.url = url  # the proxy: a node's [agent] http_proxy
        self.work = work

    def served(self):
        out = []
        for line in _lines(os.path.join(self.work, "logs", "access.log")):
            _, _, code, size, method, url, rng = line.split(" ")[:7]
            if method == "-":  # a connection closed before any request (the start-up probe)
                continue
            cache, status = code.split("/")
            out.append(Logged(method, urllib.parse.urlsplit(url).path, int(status), cache, int(size),
                              "" if rng == "-" else rng))
        return out


class NginxCache:
    def __init__(self, url, work):
        self.url = url  # the repository's URL as the nodes know it
        self.work = work

    def served(self):
        out = []
        for line in _lines(os.path.join(self.work, "access.log")):
            method, path, status, body, rng, cache = line.split("\t")
            out.append(Logged(method, path, int(status), cache, int(body), "" if rng == "-" else rng))
        return out


def _lines(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def squid(work_dir, repository_host="127.0.0.1", without=()):
    """Yield a Squid forward proxy for the repository at repository_host; stop it afterwards.
    squid drops to user proxy: work_dir and its parents must let proxy in."""
    proxy = pwd.getpwnam("proxy")
    work = os.path.abspath(work_dir)
    for sub in ("cache", "logs", "run"):
        os.makedirs(os.path.join(work, sub), exist_ok=True)
        os.chown(os.path.join(work, sub), proxy.pw_uid, proxy.pw_gid)
    _check_reachable(work, proxy)
    port = free_port()
    conf = os.path.join(work, "squid.conf")
    values = dict(DOC_SQUID, listen="127.0.0.1:%d" % port, hostname="localhost",
                  nodes="127.0.0.1/32", repository=repository_host, max_object="1 GB",
                  cache_dir=os.path.join(work, "cache"), cache_mb="2000", cache_mem="64 MB",
                  logs=os.path.join(work, "logs"), run=os.path.join(work, "run"),
                  shutdown="0 seconds")
    with open(conf, "w") as f:
        f.write(render(SQUID_CONF, values, without))
    made = subprocess.run(["squid", "-N", "-z", "-f", conf], capture_output=True, text=True)
    if made.returncode != 0:
        raise RuntimeError("squid -z failed: %s" % (made.stderr or made.stdout)[-500:])
    with _running(["squid", "-N", "-f", conf], port, os.path.join(work, "logs", "cache.log")):
        yield Squid("http://127.0.0.1:%d" % port, work)


def _check_reachable(work, user):
    """squid, as user proxy, must reach its own files: pytest's tmp_path is root's alone."""
    path = work
    while path != "/":
        st = os.stat(path)
        if st.st_uid != user.pw_uid and not st.st_mode & 0o001:
            raise RuntimeError("squid runs as user proxy, which cannot enter %s (mode %o): use a "
                               "work_dir every user can reach" % (path, st.st_mode & 0o777))
        path = os.path.dirname(path)


@contextlib.contextmanager
def nginx_cache(upstream_url, work_dir, without=()):
    """Yield an NginxCache proxying to the origin at upstream_url; stop it afterwards."""
    work = os.path.abspath(work_dir)
    os.makedirs(os.path.join(work, "cache"), exist_ok=True)
    upstream = urllib.parse.urlsplit(upstream_url)
    port = free_port()
    site = dict(DOC_NGINX, cache_dir=os.path.join(work, "cache"), max_size="2g",
                origin=upstream.netloc, origin_host=upstream.netloc, listen="127.0.0.1:%d" % port)
    with open(os.path.join(work, "update-agent-cache.conf"), "w") as f:
        f.write(render(NGINX_SITE, site, without))
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_MAIN.format(work=work))
    argv = ["nginx", "-c", conf, "-p", work, "-e", os.path.join(work, "error.log")]
    with _running(argv, port, os.path.join(work, "error.log")):
        # the same paths as on the origin: the repository's URL with the cache's host
        yield NginxCache("http://127.0.0.1:%d%s" % (port, upstream.path.rstrip("/")), work)


@contextlib.contextmanager
def _running(argv, port, log):
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        try:
            wait_port(port)
        except RuntimeError:
            proc.terminate()
            err = proc.communicate()[1].decode()
            raise RuntimeError("%s did not start: %s%s" % (argv[0], err[-300:], _tail(log)))
        yield proc
    finally:
        proc.terminate()  # SIGTERM: squid shuts down, nginx's master stops its workers
        proc.wait()


def _tail(path):
    lines = _lines(path)
    return ("; %s: %s" % (path, " | ".join(lines[-5:]))) if lines else ""
