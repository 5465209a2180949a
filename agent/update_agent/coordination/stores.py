"""Where the fleet's records live: a small key-value store per engine, one class each.

A store's connected() yields a session with:
  get(key) -> (text or None, token)
  swap(key, token, text) -> bool: writes only if the record is still what get()
      saw (token None: only if there is none); the compare-and-swap every
      shared record is changed with
  put(key, text, ttl=None): an unconditional write; with ttl (seconds) the
      record disappears after ttl
  children(prefix) -> {key: text}: every record under prefix (a "/"-ended
      path), at any depth
  names(prefix) -> set of the keys children() would give, without their values
      where the engine can (etcd); elsewhere the live ones of children()
  delete(key)
  keep(key) -> bool: extend the life of a record this store put with a ttl,
      without writing it again (False: the engine cannot, or it expired: put it);
      can_keep says whether it ever can
  can_watch, watch(key, token, timeout) -> Watched: wait until key changes
      after the get() that returned token (etcd only; can_watch is False elsewhere)
Keys are paths under keys.ROOT (keys.py lays them out); values are JSON text.

Expiry: etcd ties a record put with a ttl to a lease of its own, Redis sets
it with PX. ZooKeeper and the file store have no expiry to give, so put()
with a ttl writes an "expires" wall-clock field (the store's clock + ttl)
into the record, which must then be a JSON object, and their get() and
children() drop a record whose "expires" has passed: for them a record with
an "expires" field is a record with a ttl.

Engines that keep a session (ZooKeeper) open one per use, so a daemon that
waits for a slot leaves no client behind between attempts.
"""

import base64
import contextlib
import enum
import fcntl
import json
import logging
import math
import os
import random
import time
import urllib.parse

from update_agent.coordination import keys
from update_agent.decide.image_id import show_value
from update_agent.errors import AgentError, BadInput


def _prefix(prefix):
    """children() takes whole path segments: "/members/a/" must not list "/members/ab/"."""
    if not prefix.endswith("/"):
        raise ValueError("a prefix of records ends in '/': %r" % prefix)
    return prefix


def _live(text, now):
    """text, or None where it is a record whose "expires" time has passed."""
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return text
    expires = record.get("expires") if isinstance(record, dict) else None
    return None if isinstance(expires, (int, float)) and 0 < expires <= now else text


def _expiring(text, ttl, now):
    record = json.loads(text)
    record["expires"] = now + ttl
    return json.dumps(record, sort_keys=True)


class Watched(enum.StrEnum):
    """How a watch() ended."""

    CHANGED = "changed"
    TIMED_OUT = "timed-out"


class Stateless:
    """A store whose client holds no session: it is its own session."""

    errors = ()  # the client's exceptions for an engine that does not answer
    can_watch = False
    can_keep = False  # keep() can extend a record's life

    def connected(self):
        return contextlib.nullcontext(self)

    def keep(self, key):
        return False

    def names(self, prefix):
        return set(self.children(prefix))


def _b64(text):
    return base64.b64encode(text.encode()).decode()


class EtcdStore(Stateless):
    """etcd v3 through its gRPC gateway (etcd3gw, which tooz's etcd3 driver uses).
    The token is the key's mod_revision. A put with a ttl takes a lease of its own
    (a put again replaces the last one, which then runs out holding nothing);
    keep() renews that lease instead, one request and no write."""

    can_watch = True
    can_keep = True

    def __init__(self, url, timeout=10):
        import etcd3gw
        import requests
        from etcd3gw import exceptions
        # etcd3gw wraps timeouts and refused connections; not a reply cut short by a restart
        self.errors = (exceptions.Etcd3Exception, requests.RequestException)
        u = urllib.parse.urlsplit(url)
        self.client = etcd3gw.client(host=u.hostname or "127.0.0.1", port=u.port or 2379,
                                     protocol="https" if u.scheme.endswith("https") else "http",
                                     timeout=timeout)
        self.leases = {}  # key -> the lease this store last put it with

    def get(self, key):
        found = self.client.get(key.encode(), metadata=True)
        if not found:
            return None, None
        value, meta = found[0]
        return value.decode(), meta["mod_revision"]

    def swap(self, key, token, text):
        same = ({"target": "CREATE", "create_revision": 0} if token is None
                else {"target": "MOD", "mod_revision": token})
        txn = {"compare": [dict(same, key=_b64(key), result="EQUAL")],
               "success": [{"request_put": {"key": _b64(key), "value": _b64(text)}}],
               "failure": []}
        return bool(self.client.transaction(txn).get("succeeded"))

    def put(self, key, text, ttl=None):
        lease = self.client.lease(max(1, math.ceil(ttl))) if ttl else None
        self.client.put(key.encode(), text.encode(), lease=lease)
        if lease is None:
            self.leases.pop(key, None)
        else:
            self.leases[key] = lease

    def keep(self, key):
        lease = self.leases.get(key)
        if lease is None:
            return False
        if lease.refresh() > 0:
            return True
        self.leases.pop(key, None)  # it ran out: the record is gone
        return False

    def watch(self, key, token, timeout):
        """Block until key is written or deleted after revision token (None: after
        now), or until timeout seconds pass with no change. One request, streamed."""
        import requests
        request = {"key": _b64(key)}
        if token is not None:
            request["start_revision"] = int(token) + 1  # replays a change made meanwhile
        response = self.client.session.post(self.client.get_url("/watch"), stream=True,
                                            json={"create_request": request},
                                            timeout=(self.client.timeout, max(0.1, timeout)))
        try:
            response.raise_for_status()
            for line in response.iter_lines():
                if line and json.loads(line).get("result", {}).get("events"):
                    return Watched.CHANGED
        except requests.ConnectionError as e:
            if "timed out" not in str(e).lower():
                raise
            return Watched.TIMED_OUT
        finally:
            response.close()
        raise requests.ConnectionError("etcd ended the watch of %s" % key)  # it stopped, say

    def children(self, prefix):
        return {meta["key"].decode(): value.decode()
                for value, meta in self.client.get_prefix(_prefix(prefix).encode())}

    def names(self, prefix):
        from etcd3gw.utils import _increment_last_byte
        start = _prefix(prefix).encode()
        return {meta["key"].decode() for _, meta in self.client.get(
            start, metadata=True, range_end=_increment_last_byte(start), keys_only=True)}

    def delete(self, key):
        self.client.delete(key.encode())


def _glob(text):
    """text matched literally in a Redis MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisStore(Stateless):
    """The token is the value itself, checked under WATCH."""

    def __init__(self, url, timeout=10):
        import redis
        self.errors = (redis.RedisError,)
        self.client = redis.Redis.from_url(url, socket_timeout=timeout)

    def get(self, key):
        raw = self.client.get(key)
        text = raw.decode() if raw is not None else None
        return text, text

    def swap(self, key, token, text):
        import redis
        with self.client.pipeline() as pipe:
            try:
                pipe.watch(key)
                current = pipe.get(key)
                if (current.decode() if current is not None else None) != token:
                    return False
                pipe.multi()
                pipe.set(key, text)
                pipe.execute()
                return True
            except redis.WatchError:
                return False

    def put(self, key, text, ttl=None):
        self.client.set(key, text, px=math.ceil(ttl * 1000) if ttl else None)

    def children(self, prefix):
        names = sorted(set(self.client.scan_iter(match=_glob(_prefix(prefix)) + "*", count=1000)))
        values = self.client.mget(names) if names else []
        # a record that expired between SCAN and MGET comes back as None
        return {k.decode(): v.decode() for k, v in zip(names, values) if v is not None}

    def delete(self, key):
        self.client.delete(key)


class FileStore(Stateless):
    """One host only (file:///dir): a JSON file per key, /update-agent/a/b in
    dir/a/b.json, but a group's slot record where it always was, dir/<group>.json.
    One lock file serializes the writers."""

    clock = staticmethod(time.time)

    def __init__(self, url, timeout=10):
        self.dir = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
        os.makedirs(self.dir, exist_ok=True)

    def _path(self, key):
        parts = keys.split(key, keys.ROOT)
        # one segment below the root would read back as a slot record: no such key
        if len(parts) < 2 or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise ValueError("not a record key: %r" % key)
        if key.startswith(keys.SLOTS) and len(parts) == 2:
            parts = parts[1:]
        return os.path.join(self.dir, *parts) + ".json"

    def _key(self, relpath):
        name = relpath[:-len(".json")]
        return keys.SLOTS + name if "/" not in name else keys.ROOT + name

    def _read(self, path):
        try:
            with open(path, encoding="utf-8") as f:
                return _live(f.read(), self.clock())
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def _locked(self):
        with open(os.path.join(self.dir, ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _write(self, key, text):
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)

    def get(self, key):
        text = self._read(self._path(key))
        return text, text

    def swap(self, key, token, text):
        with self._locked():
            if self.get(key)[0] != token:
                return False
            self._write(key, text)
            return True

    def put(self, key, text, ttl=None):
        with self._locked():
            self._write(key, _expiring(text, ttl, self.clock()) if ttl else text)

    def children(self, prefix):
        rest = keys.split(_prefix(prefix), keys.ROOT)
        if prefix == keys.SLOTS:  # the slot records are the top level's files
            rest, depth = [""], 1
        else:
            depth = None
        top = os.path.join(self.dir, *rest)
        found = {}
        for here, dirs, files in os.walk(top):
            dirs[:] = [] if depth else [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.endswith(".json") and not name.startswith("."):
                    key = self._key(os.path.relpath(os.path.join(here, name), self.dir))
                    text = key.startswith(prefix) and self._read(os.path.join(here, name))
                    if text:
                        found[key] = text
        return found

    def delete(self, key):
        with self._locked(), contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key))


class ZooKeeperStore:
    """ZooKeeper through kazoo (which tooz's zookeeper driver uses): a znode per
    key, and its version is the compare-and-swap token."""

    clock = staticmethod(time.time)
    can_watch = False  # a kazoo watch needs a session kept open: polled instead
    can_keep = False

    def __init__(self, url, timeout=10):
        import kazoo.client  # noqa: F401 (fail here, not at the first slot, when it is missing)
        from kazoo import exceptions
        from kazoo.handlers.threading import KazooTimeoutError
        self.errors = (exceptions.KazooException, KazooTimeoutError)
        # zookeeper://host1:2181,host2:2181: the ensemble, as kazoo takes it
        self.hosts = urllib.parse.urlsplit(url).netloc or "127.0.0.1:2181"
        self.timeout = timeout

    @contextlib.contextmanager
    def connected(self):
        from kazoo.client import KazooClient
        client = KazooClient(hosts=self.hosts, timeout=self.timeout,
                             connection_retry={"max_tries": 3, "delay": 0.5},
                             logger=logging.getLogger(__name__ + ".kazoo"))
        try:
            client.start(timeout=self.timeout)
            yield _ZooKeeperSession(client, self.clock, self.timeout)
        finally:
            client.stop()
            client.close()


class _ZooKeeperSession:
    can_watch = False

    def __init__(self, client, clock, timeout):
        self.client, self.clock, self.timeout = client, clock, timeout

    def keep(self, key):
        return False  # the expiry is a field of the record: only a write extends it

    def names(self, prefix):
        return set(self.children(prefix))  # whether a record lives is in its value

    def get(self, key):
        from kazoo.exceptions import NoNodeError
        try:
            data, stat = self.client.get(key)
        except NoNodeError:
            return None, None
        # an expired record (or a bare parent znode) still has a version to write over
        return _live(data.decode(), self.clock()), stat.version

    def swap(self, key, token, text):
        from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError
        try:
            if token is None:
                self.client.create(key, text.encode(), makepath=True)
            else:
                self.client.set(key, text.encode(), version=token)
            return True
        except (BadVersionError, NodeExistsError, NoNodeError):
            return False

    def put(self, key, text, ttl=None):
        from kazoo.exceptions import NodeExistsError, NoNodeError
        data = (_expiring(text, ttl, self.clock()) if ttl else text).encode()
        for _ in range(10):  # set, or create; another writer may delete or create between
            try:
                self.client.set(key, data)
                return
            except NoNodeError:
                with contextlib.suppress(NodeExistsError):
                    self.client.create(key, data, makepath=True)
                    return
        raise AgentError("coordination: %s kept appearing and vanishing" % key)

    def children(self, prefix):
        """Level by level, each level's requests pipelined on the one connection."""
        from kazoo.exceptions import NoNodeError
        found, parents, now = {}, [_prefix(prefix).rstrip("/") or "/"], self.clock()
        while parents:
            lists = [(p, self.client.get_children_async(p)) for p in parents]
            paths = []
            for p, pending in lists:
                with contextlib.suppress(NoNodeError):
                    paths += [p.rstrip("/") + "/" + c for c in pending.get(timeout=self.timeout)]
            gets = [(p, self.client.get_async(p)) for p in paths]
            parents = []
            for p, pending in gets:
                with contextlib.suppress(NoNodeError):
                    data, stat = pending.get(timeout=self.timeout)
                    text = _live(data.decode(), now)
                    if text:
                        found[p] = text
                    if stat.numChildren:
                        parents.append(p)
        return found

    def delete(self, key):
        from kazoo.exceptions import NoNodeError, NotEmptyError
        try:
            self.client.delete(key)
        except NoNodeError:
            pass
        except NotEmptyError:  # the record goes; the records under it stay
            self.client.set(key, b"")


SCHEMES = {"etcd3+http": EtcdStore, "etcd3+https": EtcdStore, "redis": RedisStore,
           "rediss": RedisStore, "zookeeper": ZooKeeperStore, "file": FileStore}


def for_url(url, timeout=10):
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise BadInput("coordination backend %r: reboot slots need etcd3+http(s)://, redis://, "
                       "zookeeper:// or file:// (or a FleetLock http(s):// URL)" % url)
    try:
        store = SCHEMES[scheme](url, timeout)
    except ImportError as e:
        raise AgentError("coordination backend %s needs %s installed" % (url, e.name))
    store.url = url
    return store


@contextlib.contextmanager
def session(store):
    """A session of the store; an engine that does not answer is one AgentError naming it."""
    try:
        with store.connected() as s:
            yield s
    except store.errors as e:
        raise AgentError("coordination backend %s: %s" % (store.url, str(e) or type(e).__name__))


def parse(key, text):
    """The record at key as a dict, None for no text; anything else is named, not a traceback."""
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise AgentError("coordination: the record at %s is not a JSON object: %s"
                         % (key, show_value(text)))
    return record


def read(store, key):
    """The record at key as a dict, or None where there is none."""
    with session(store) as s:
        text, _ = s.get(key)
    return parse(key, text)


def update(store, key, fn, attempts=50):
    """Apply fn(record dict or None) -> (new record, result) with compare-and-swap:
    fn sees the record as it is and may run again when another writer came first."""
    with session(store) as s:
        for attempt in range(attempts):
            text, token = s.get(key)
            record = parse(key, text)
            # fn gets a copy of its own: one that changed the record in place still writes
            new, result = fn(parse(key, text))
            if new == record:
                return result
            if s.swap(key, token, json.dumps(new, sort_keys=True)):
                return result
            # many nodes racing for one record: spread their next tries
            time.sleep(random.uniform(0, min(0.2, 0.005 * 2 ** attempt)))
    raise AgentError("coordination: record %s kept changing under us (%d attempts)" % (key, attempts))
