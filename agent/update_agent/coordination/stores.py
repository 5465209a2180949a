"""Where the slot records live: one compare-and-swap per engine, one class each.

Every store offers get(key) -> (text or None, token) and swap(key, token,
text) -> bool, which writes only if the record is still what get() saw.
"""

import fcntl
import json
import os
import urllib.parse

from update_agent.errors import AgentError, BadInput

PREFIX = "/update-agent/slots/"


class EtcdStore:
    """etcd v3 through its gRPC gateway (etcd3gw, which tooz's etcd3 driver uses)."""

    def __init__(self, url, timeout=10):
        import etcd3gw
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


class RedisStore:
    def __init__(self, url, timeout=10):
        import redis
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


class FileStore:
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


SCHEMES = {"etcd3+http": EtcdStore, "etcd3+https": EtcdStore, "redis": RedisStore,
           "rediss": RedisStore, "file": FileStore}


def for_url(url, timeout=10):
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise BadInput("coordination backend %r: reboot slots need etcd3+http(s)://, redis:// or "
                       "file:// (or a FleetLock http(s):// URL)" % url)
    try:
        return SCHEMES[scheme](url, timeout)
    except ImportError as e:
        raise AgentError("coordination backend %s needs %s installed" % (url, e.name))


def update(store, group, fn, attempts=50):
    """Apply fn(state dict or None) -> (new state, result) with compare-and-swap."""
    for _ in range(attempts):
        text, token = store.get(group)
        state = json.loads(text) if text else None
        new, result = fn(state)
        if new == state:
            return result
        if store.swap(group, token, json.dumps(new, sort_keys=True)):
            return result
    raise AgentError("coordination: group %s kept changing under us (%d attempts)" % (group, attempts))
