"""20 real agents update 20 sandbox nodes at once from one repository through a cache
(docs/caching.md): squid as the nodes' forward proxy ([agent] http_proxy), or nginx
as the site's reverse cache (the metadata's repo URL names it). Every node ends
exactly on the image, and the origin sends at most 1.5 x the unique bytes of the
packs and objects the nodes fetched."""

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

import pytest

import caches_local
import nginx_local
import world
from update_agent.decide import repo_format as fmt
from update_agent.repo import publish as publish_mod
from update_agent.system import System

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]

NODES = 20
BUDGET = 1.5
CONTENT = ("/packs/", "/objects/")


@pytest.fixture(scope="module")
def place():
    """A directory squid (user proxy) can enter: pytest's tmp_path is root's alone."""
    path = tempfile.mkdtemp(prefix="repo-fleet-", dir="/var/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts, place):
    """Image B with a few MB new: big files (objects) and many small ones (packs)."""
    w = world.World(str(tmp_path_factory.mktemp("fleet-cache")))
    rnd = random.Random(20)
    e = w.tree("img-E", image_id="img-E", release=world.RELEASE, variant="B")
    for i in range(4):
        _write(os.path.join(e, "usr/lib/e/big%d.so" % i), rnd.randbytes(fmt.SMALL + 100_000))
    for i in range(150):
        _write(os.path.join(e, "usr/share/e/f%03d" % i), rnd.randbytes(rnd.randrange(500, 20_000)))
    w.tree_e = e
    w.repo = os.path.join(place, "repo")
    publish_mod.publish(w.tree_a, w.repo, "img-A", System())
    publish_mod.publish(e, w.repo, "img-E", System())
    with open(os.path.join(w.repo, fmt.record_path("img-E"))) as f:
        w.digest = json.load(f)["manifest"]
    return w


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


@pytest.fixture
def nodes(w, tmp_path):
    made = []
    try:
        for i in range(NODES):
            home = tmp_path / ("n%02d" % i)
            home.mkdir()
            made.append(w.node(str(home)))
        yield made
    finally:
        for n in made:
            n.stop()


def update_all(nodes, tmp_path, repo_url, digest, proxy=""):
    """Every node's agent at once; each must succeed."""
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"image_id": "img-E", "update_agent": {
        "repo": repo_url, "image_digest": digest}}))
    config = tmp_path / "agent.conf"
    config.write_text("[agent]\nhttp_proxy = %s\n" % proxy)
    env = dict(os.environ, PYTHONPATH=os.path.join(world.PROJECT, "agent"))
    procs = [subprocess.Popen([sys.executable, "-m", "update_agent", "--root", n.root,
                               "--metadata", str(meta), "--config", str(config), "apply"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for n in nodes]
    failed = [(i, p.stderr.read()[-400:]) for i, p in enumerate(procs) if p.wait(300) != 0]
    assert failed == [], failed


def unique_bytes(requests, repo):
    """Bytes of the packs and objects any node fetched: the union of the ranges asked
    for in each file (a whole file when asked without Range)."""
    spans = {}
    for path, rng in requests:
        rel = path.split("/", 2)[2] if path.startswith("/repo/") else path.lstrip("/")
        if rng:
            first, _, last = rng.partition("=")[2].partition("-")
            spans.setdefault(rel, set()).update(range(int(first), int(last) + 1))
        else:
            spans.setdefault(rel, set()).update(range(os.path.getsize(os.path.join(repo, rel))))
    return sum(len(s) for s in spans.values())


def origin_content_bytes(origin):
    return sum(s.body_bytes for s in origin.served() if s.path.startswith(CONTENT))


def check(name, w, nodes, origin, requests):
    for n in nodes:
        world.assert_matches_image(n.root, w.tree_e)
    unique = unique_bytes(requests, w.repo)
    sent = origin_content_bytes(origin)
    print("%s: %d nodes, origin sent %d content bytes for %d unique (%.2f x)"
          % (name, len(nodes), sent, unique, sent / unique))
    assert unique > 2_000_000
    assert sent <= BUDGET * unique, (sent, unique)


def test_20_agents_through_squid_as_their_forward_proxy(w, nodes, place, tmp_path):
    work = tempfile.mkdtemp(prefix="squid-", dir=place)
    os.chmod(work, 0o755)
    with nginx_local.origin(w.repo, os.path.join(work, "origin")) as origin, \
            caches_local.squid(os.path.join(work, "squid")) as proxy:
        update_all(nodes, tmp_path, origin.url + "/", w.digest, proxy=proxy.url)
        asked = [(s.path, s.range) for s in proxy.served() if s.path.startswith(CONTENT)]
        # every node went through the proxy: it saw each node's content requests
        assert len(asked) >= NODES
        check("squid", w, nodes, origin, asked)


def test_20_agents_through_nginx_as_the_sites_reverse_cache(w, nodes, place, tmp_path):
    work = tempfile.mkdtemp(prefix="nginx-", dir=place)
    with nginx_local.origin(w.repo, os.path.join(work, "origin")) as origin, \
            caches_local.nginx_cache(origin.url, os.path.join(work, "cache")) as cache:
        update_all(nodes, tmp_path, cache.url + "/", w.digest)
        asked = [(s.path, s.range) for s in cache.served() if s.path.startswith(CONTENT)]
        assert len(asked) >= NODES
        check("nginx", w, nodes, origin, asked)
