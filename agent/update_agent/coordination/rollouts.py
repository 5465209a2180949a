"""A rollout's records on the coordination engine: who is in the fleet, and how
far each stage got.

Storage only: what a record should become is decided by the caller's fn (the
stage rules), which update_control() and update_stage() apply by
compare-and-swap. The keys are keys.py's; the record shapes are:
  member  {"node", "group", "image_id", "state", "since", "seen", "expires"},
          written with a ttl on every heartbeat: listed only while it lives;
  control {"image_id", "policy", "created", "halted", "halted_at", "halted_by"};
  stage   {"nodes": {node: {"state", "at", "started", "message"}}, "owner", "halted", "finished"};
  wake    {"node", "at", "by"}: written to wake a waiting node (etcd only: a watch).
"""

import json
import urllib.parse

from update_agent.coordination import fleetlock, keys, stores
from update_agent.errors import BadInput


def for_url(url, clock, timeout=10):
    """FleetRecords on the backend at url; a FleetLock server holds no records."""
    if fleetlock.is_server(url):
        raise BadInput("rollout policies need etcd, Redis, ZooKeeper or file:// coordination; "
                       "%s is a FleetLock server, which has only reboot slots" % url)
    if urllib.parse.urlsplit(url).scheme not in stores.SCHEMES:
        raise BadInput("coordination backend %r: rollout policies need etcd3+http(s)://, "
                       "redis://, zookeeper:// or file://" % url)
    return FleetRecords(stores.for_url(url, timeout), clock)


def _parsed(texts):
    return {key: stores.parse(key, text) for key, text in texts.items()}


class FleetRecords:
    """Members, rollout control and stage records, over one store. The clock
    stamps heartbeats; whether a record expired is the engine's to say (for
    ZooKeeper and files, the store's clock: stores.py)."""

    def __init__(self, store, clock):
        self.store, self.clock = store, clock

    def _children(self, prefix):
        with stores.session(self.store) as s:
            return _parsed(s.children(prefix))

    def register(self, group, node, record, ttl):
        """Write (or refresh: a heartbeat is the same call) node's member record,
        live for ttl seconds from now."""
        now = self.clock()
        record = dict(record, node=node, group=group, seen=now, expires=now + ttl)
        with stores.session(self.store) as s:
            s.put(keys.member(group, node), json.dumps(record, sort_keys=True), ttl)

    def keep(self, group, node):
        """Extend node's member record without writing it (etcd: its lease); False
        where the engine cannot, or the record ran out: register() it again."""
        if not self.store.can_keep:
            return False  # no session opened for nothing (ZooKeeper's is a connection)
        with stores.session(self.store) as s:
            return s.keep(keys.member(group, node))

    def wake_token(self, node):
        """Where node's wake-ups stand, to be taken before it looks at the records:
        wait_for_wake() returns at the first wake-up after it. None: no watch here."""
        if not self.store.can_watch:
            return None
        with stores.session(self.store) as s:
            text, token = s.get(keys.wake(node))
            if text is None:  # a key to watch from a revision: a wake-up meanwhile is not lost
                s.put(keys.wake(node), json.dumps({"node": node, "at": self.clock(), "by": ""}))
                text, token = s.get(keys.wake(node))
        return token

    def wake(self, nodes, by):
        """Wake the nodes waiting on wait_for_wake(); nothing where there is no watch."""
        if not self.store.can_watch or not nodes:
            return
        with stores.session(self.store) as s:
            for node in nodes:
                s.put(keys.wake(node), json.dumps({"node": node, "at": self.clock(), "by": by}))

    def wait_for_wake(self, node, token, timeout):
        """Block until node is woken after token, or timeout: a stores.Watched."""
        with stores.session(self.store) as s:
            return s.watch(keys.wake(node), token, timeout)

    def leave(self, group, node):
        with stores.session(self.store) as s:
            s.delete(keys.member(group, node))

    def members(self, group):
        """{node: member record} of the group's live members."""
        return {keys.split(key, keys.members(group))[-1]: record
                for key, record in self._children(keys.members(group)).items()
                if len(keys.split(key, keys.members(group))) == 1}

    def groups(self):
        """{group: {node: member record}} of every group with a live member."""
        found = {}
        for key, record in self._children(keys.MEMBERS).items():
            parts = keys.split(key, keys.MEMBERS)
            if len(parts) == 2:
                found.setdefault(parts[0], {})[parts[1]] = record
        return found

    def group_names(self):
        """{group: sorted node names} of every group with a live member: groups()
        without the records (on etcd, the keys only: a look at a large fleet)."""
        with stores.session(self.store) as s:
            found = s.names(keys.MEMBERS)
        by_group = {}
        for key in found:
            parts = keys.split(key, keys.MEMBERS)
            if len(parts) == 2:
                by_group.setdefault(parts[0], []).append(parts[1])
        return {g: sorted(nodes) for g, nodes in by_group.items()}

    def control(self, rid):
        return stores.read(self.store, keys.control(rid))

    def update_control(self, rid, fn):
        """fn(control record or None) -> (new record, result); returns result."""
        return stores.update(self.store, keys.control(rid), fn)

    def stage(self, rid, i):
        return stores.read(self.store, keys.stage(rid, i))

    def update_stage(self, rid, i, fn):
        """fn(stage record or None) -> (new record, result); returns result."""
        return stores.update(self.store, keys.stage(rid, i), fn)

    def stages(self, rid):
        """The rollout's stage records by index: [stage 0, stage 1, ...] up to the
        last one written, None for a stage no node has written yet."""
        by_index = {}
        for key, record in self._children(keys.rollout(rid)).items():
            i = keys.stage_index(key, rid)
            if i is not None:
                by_index[i] = record
        return [by_index.get(i) for i in range(max(by_index) + 1)] if by_index else []

    def rollouts(self):
        """The ids of every rollout with a record, sorted."""
        return sorted({keys.split(key, keys.ROLLOUTS)[0]
                       for key in self._children(keys.ROLLOUTS)})
