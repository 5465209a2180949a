"""Where the slot records live: one compare-and-swap per engine, one class each.

A store's connected() yields a session with get(key) -> (text or None, token)
and swap(key, token, text) -> bool, which writes only if the record is still
what get() saw. Engines that keep a session (ZooKeeper) open one per use, so
a daemon that waits for a slot leaves no client behind between attempts.
"""

import contextlib
import fcntl
import json
import logging
import os
import urllib.parse

from update_agent.errors import AgentError, BadInput

PREFIX = "/update-agent/slots/"


class Stateless:
    """A store whose client holds no session: it is its own session."""

    errors = ()  # the client's exceptions for an engine that does not answer

    def connected(self):
        return contextlib.nullcontext(self)


class EtcdStore(Stateless):
    """etcd v3 through its gRPC gateway (etcd3gw, which tooz's etcd3 driver uses)."""

    def __init__(self, url, timeout=10):
        import etcd3gw
        from etcd3gw import exceptions
        self.errors = (exceptions.Etcd3Exception,)
        u = urllib.parse.urlsplit(url)
        self.client = etcd3gw.client(host=u.hostname or "127.0.0.1", port=u.port or 2379,
                                     protocol="https" if u.scheme.endswith("https") else "http",
                                     timeout=timeout)

    def get(self, group):
        values = self.client.get(PREFIX + group)
        return (values[0].decode() if values else None), (values[0].decode() if values else None)

    def swap(self, group, token, text):
        if token is None:
            return self.client.create(PREFIX + group, text)
        return self.client.replace(PREFIX + group, token, text)


class RedisStore(Stateless):
    def __init__(self, url, timeout=10):
        import redis
        self.errors = (redis.RedisError,)
        self.client = redis.Redis.from_url(url, socket_timeout=timeout)

    def get(self, group):
        raw = self.client.get(PREFIX + group)
        text = raw.decode() if raw is not None else None
        return text, text

    def swap(self, group, token, text):
        import redis
        key = PREFIX + group
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


class FileStore(Stateless):
    """One host only (file:///path): a JSON file per group under a directory."""

    def __init__(self, url, timeout=10):
        self.dir = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
        os.makedirs(self.dir, exist_ok=True)

    def _path(self, group):
        return os.path.join(self.dir, group + ".json")

    def get(self, group):
        try:
            with open(self._path(group), encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            text = None
        return text, text

    def swap(self, group, token, text):
        with open(os.path.join(self.dir, ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current, _ = self.get(group)
            if current != token:
                return False
            tmp = self._path(group) + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, self._path(group))
            return True


class ZooKeeperStore:
    """ZooKeeper through kazoo (which tooz's zookeeper driver uses): a znode per
    group, and its version is the compare-and-swap token."""

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
            yield _ZooKeeperSession(client)
        finally:
            client.stop()
            client.close()


class _ZooKeeperSession:
    def __init__(self, client):
        self.client = client

    def get(self, group):
        from kazoo.exceptions import NoNodeError
        try:
            data, stat = self.client.get(PREFIX + group)
        except NoNodeError:
            return None, None
        return data.decode(), stat.version

    def swap(self, group, token, text):
        from kazoo.exceptions import BadVersionError, NodeExistsError
        try:
            if token is None:
                self.client.create(PREFIX + group, text.encode(), makepath=True)
            else:
                self.client.set(PREFIX + group, text.encode(), version=token)
            return True
        except (BadVersionError, NodeExistsError):
            return False


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
def _session(store):
    try:
        with store.connected() as session:
            yield session
    except store.errors as e:
        raise AgentError("coordination backend %s: %s" % (store.url, str(e) or type(e).__name__))


def read(store, group):
    """The group's state dict, or None where no slot was ever taken."""
    with _session(store) as session:
        text, _ = session.get(group)
    return json.loads(text) if text else None


def update(store, group, fn, attempts=50):
    """Apply fn(state dict or None) -> (new state, result) with compare-and-swap."""
    with _session(store) as session:
        for _ in range(attempts):
            text, token = session.get(group)
            state = json.loads(text) if text else None
            new, result = fn(state)
            if new == state:
                return result
            if session.swap(group, token, json.dumps(new, sort_keys=True)):
                return result
    raise AgentError("coordination: group %s kept changing under us (%d attempts)" % (group, attempts))
