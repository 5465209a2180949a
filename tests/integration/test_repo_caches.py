"""A caching proxy in front of the repository takes the fleet's load off the origin
(docs/caching.md): 20 nodes fetch the same image at once, through squid as their
forward proxy or through nginx as the site's reverse cache, and the origin sends at
most 1.5 x the bytes of the packs and objects they fetched, while every node gets
the right bytes. With squid's defaults, the origin sends each node its own copy."""

import hashlib
import os
import random
import shutil
import subprocess
import tempfile
import threading

import pytest

import caches_local
import nginx_local
from repo_fetch import fetch_paths
from update_agent.cli import main as cli
from update_agent.decide import entries as entries_mod, repo_format as fmt

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="squid drops from root to user proxy")]

NODES = 20
IMAGE = "img-cache"
BUDGET = 1.5  # the origin's bytes over the unique bytes of the packs and objects fetched


@pytest.fixture(scope="module")
def place():
    """A directory user proxy (squid) can enter: pytest's tmp_path is root's alone."""
    path = tempfile.mkdtemp(prefix="repo-caches-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def repo(place):
    """An image of random (incompressible) contents: three packs of small files, a few
    objects, and one object over squid's default 4 MB object limit."""
    rnd = random.Random(16)
    tree = os.path.join(place, "tree")
    _write(tree, "etc/image_id", IMAGE.encode() + b"\n")
    for i in range(180):
        _write(tree, "usr/share/d%d/f%03d" % (i % 3, i), rnd.randbytes(rnd.randrange(1000, 60_000)))
    for i, size in enumerate((1_100_000, 1_300_000, 1_900_000)):
        _write(tree, "usr/lib/lib%d.so" % i, rnd.randbytes(size))
    _write(tree, "usr/lib/big.bin", rnd.randbytes(6_000_000))
    path = os.path.join(place, "repo")
    assert cli.main(["publish", tree, path, "--image-id", IMAGE]) == 0
    return Repo(path, IMAGE)


def _write(top, rel, data):
    path = os.path.join(top, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


class Repo:
    """The published image as a client reads it: record, metadata, where each content is."""

    def __init__(self, path, image_id):
        self.path = path
        with open(os.path.join(path, fmt.record_path(image_id))) as f:
            self.record_text = f.read()
        self.record = fmt.record_loads(self.record_text, image_id)
        self.metadata = [fmt.record_path(image_id)] + fmt.metadata_paths(self.record)
        text = _unzstd(self.read(fmt.manifest_path(fmt.hex_of(self.record["manifest"]))))
        entries, _ = entries_mod.loads(text.decode("utf-8", "surrogateescape"))
        self.sizes = fmt.stored_files(entries)
        index = _unzstd(self.read(fmt.index_path(fmt.hex_of(self.record["index"])))).decode()
        self.members = {}  # pack path: [(offset, length, content hex)] in order
        self.objects = []
        for hexdigest, (where, offset, length) in sorted(fmt.index_loads(index).items()):
            if where.startswith("packs/"):
                self.members.setdefault(where, []).append((offset, length, hexdigest))
            else:
                self.objects.append(where)
        for members in self.members.values():
            members.sort()

    def read(self, rel, rng=None):
        with open(os.path.join(self.path, rel), "rb") as f:
            data = f.read()
        return data[rng[0]:rng[1] + 1] if rng else data

    def requests(self, node):
        """What node number `node` asks for, the client's way: the record and metadata,
        every object whole, the first pack whole, and in the others the members this node
        lacks (nodes lack different ones), neighbours merged into one range each."""
        wanted = [(p, None) for p in self.metadata] + [(p, None) for p in self.objects]
        packs = sorted(self.members)
        wanted.append((packs[0], None))
        for pack in packs[1:]:
            run = []
            for j, member in enumerate(self.members[pack]):
                if (j + node) % 4 == 0:  # this one the node has already
                    wanted += _merged(pack, run)
                    run = []
                else:
                    run.append(member)
            wanted += _merged(pack, run)
        return wanted

    def check(self, path, rng, body):
        """Hash-check a body as a client does (one verified body per distinct digest)."""
        if path == fmt.record_path(IMAGE):
            assert body.decode() == self.record_text
        elif rng is None and path.startswith("packs/"):
            assert hashlib.sha256(body).hexdigest() == _name(path), path
        elif rng is None:
            assert hashlib.sha256(_unzstd(body)).hexdigest() == _name(path), path
        else:
            members = [m for m in self.members[path] if rng[0] <= m[0] <= rng[1]]
            content = _unzstd(body)  # the members' frames, one after another
            for _, _, hexdigest in members:
                size = self.sizes[hexdigest]
                assert hashlib.sha256(content[:size]).hexdigest() == hexdigest, (path, rng)
                content = content[size:]
            assert content == b"", (path, rng)


def _merged(pack, run):
    return [(pack, (run[0][0], run[-1][0] + run[-1][1] - 1))] if run else []


def _name(path):
    return os.path.basename(path).split(".")[0]


def _unzstd(data):
    return subprocess.run(["zstd", "-d", "-q", "-c"], input=data, capture_output=True, check=True).stdout


def run_nodes(repo, base_url, proxy=None):
    """NODES clients at once; every body checked. Returns the unique bytes of the packs
    and objects any of them fetched."""
    results, errors = [None] * NODES, []
    gate = threading.Barrier(NODES)

    def node(i):
        try:
            gate.wait()
            results[i] = fetch_paths(base_url, repo.requests(i), proxy=proxy)
        except Exception as e:  # reported below, naming the node
            errors.append("node %d: %s" % (i, e))

    threads = [threading.Thread(target=node, args=(i,)) for i in range(NODES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    verified, fetched = set(), set()
    for i, got in enumerate(results):
        assert sorted(got) == sorted(repo.requests(i)), "node %d" % i
        for (path, rng), body in got.items():
            digest = hashlib.sha256(body).hexdigest()
            if (path, rng, digest) not in verified:
                repo.check(path, rng, body)
                verified.add((path, rng, digest))
            if path.startswith(("packs/", "objects/")):
                fetched.add(path)
    return sum(os.path.getsize(os.path.join(repo.path, p)) for p in fetched)


def measured(name, origin, unique):
    sent = origin.body_bytes()
    print("%s: origin sent %d bytes for %d unique bytes of packs and objects (%.2f x)"
          % (name, sent, unique, sent / unique))
    return sent


def test_squid_as_the_nodes_forward_proxy_keeps_the_origin_within_budget(repo, place):
    work = tempfile.mkdtemp(prefix="squid-", dir=place)
    os.chmod(work, 0o755)
    with nginx_local.origin(repo.path, os.path.join(work, "origin")) as origin, \
            caches_local.squid(os.path.join(work, "squid")) as proxy:
        unique = run_nodes(repo, origin.url, proxy=proxy.url)
        sent = measured("squid", origin, unique)
        served = proxy.served()
    assert unique > 10_000_000
    assert sent <= BUDGET * unique, (sent, unique)
    # every pack and object came from the origin once, whole: no range reached it
    content = [s for s in origin.served() if s.path.startswith(("/packs/", "/objects/"))]
    assert sorted(s.path for s in content) == sorted(set(s.path for s in content))
    assert all(s.range == "" and s.status == 200 for s in content), content
    assert len(served) >= NODES * len(repo.requests(0))


def test_nginx_as_the_sites_reverse_cache_keeps_the_origin_within_budget(repo, place):
    work = tempfile.mkdtemp(prefix="nginx-", dir=place)
    with nginx_local.origin(repo.path, os.path.join(work, "origin")) as origin, \
            caches_local.nginx_cache(origin.url, os.path.join(work, "cache")) as cache:
        unique = run_nodes(repo, cache.url)
        sent = measured("nginx", origin, unique)
        served = cache.served()
    assert sent <= BUDGET * unique, (sent, unique)
    # the origin saw only slices: 1 MiB-aligned ranges, each once
    content = [s for s in origin.served() if s.path.startswith(("/packs/", "/objects/"))]
    asked = [(s.path, s.range) for s in content]
    assert len(asked) == len(set(asked)), sorted(asked)
    assert all(int(s.range.split("=")[1].split("-")[0]) % (1 << 20) == 0 for s in content), asked
    assert sum(1 for s in served if s.cache == "HIT") > NODES * len(repo.requests(0)) // 2


def test_with_squids_defaults_every_node_costs_the_origin_its_ranges_again(repo, place):
    # squid's defaults: range_offset_limit 0, maximum_object_size 4 MB, collapsed_forwarding
    # off (on, with ranges forwarded, squid 5.7 sends some nodes another node's range)
    work = tempfile.mkdtemp(prefix="squid-defaults-", dir=place)
    os.chmod(work, 0o755)
    defaults = ("range_offset_limit", "maximum_object_size", "collapsed_forwarding")
    with nginx_local.origin(repo.path, os.path.join(work, "origin")) as origin, \
            caches_local.squid(os.path.join(work, "squid"), without=defaults) as proxy:
        unique = run_nodes(repo, origin.url, proxy=proxy.url)
        sent = measured("squid with its defaults", origin, unique)
    asked = [rng for i in range(NODES) for _, rng in repo.requests(i) if rng]
    ranges = [s for s in origin.served() if s.range]
    # every node's every range went to the origin as it was: none was cached
    assert len(ranges) == len(asked)
    assert sum(s.body_bytes for s in ranges) == sum(last - first + 1 for first, last in asked)
    assert sent > 3 * unique, (sent, unique)
