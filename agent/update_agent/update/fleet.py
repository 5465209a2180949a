"""This node's side of the fleet: the rollout gate an update goes through, and the
member record the daemon's heartbeat keeps alive (one object, shared by the
update and the heartbeat thread)."""

import threading

from update_agent import coordination
from update_agent.coordination import node_id as node_ids, rollouts
from update_agent.errors import BadInput
from update_agent.sources import desired as desired_mod
from update_agent.update import blockers, rollout


class NodeInFleet:
    def __init__(self, paths, config, system, planner, current_image):
        """current_image() -> the image id the node has committed ("" if none)."""
        self.paths, self.config, self.system = paths, config, system
        self.planner, self.current_image = planner, current_image
        self.gate = None  # the gate of the last update (or the heartbeat's idle one)
        self._lock = threading.Lock()  # the heartbeat thread sets self.gate too

    def gate_for(self, want):
        """want's rollout gate (kept for the heartbeat), None without a rollout policy."""
        gate = self._gate(want)
        with self._lock:
            self.gate = gate
        return gate

    def preview(self, want):
        """For --dry-run: {"group", "node", "stage", "next", "reason"} of want's rollout
        for this node, None without a rollout policy. Reads the engine, writes nothing."""
        gate = self._gate(want)
        if gate is None:
            return None
        step = gate.preview(want.image_id)
        stage = gate.policy.stages[step.stage].name if step.stage >= 0 else ""
        return {"group": gate.group, "node": gate.node, "stage": stage, "next": str(step.kind),
                "reason": step.reason}

    def wait_turn(self, timeout):
        """Block until the fleet wakes this node (a step it waits for may be free), or
        timeout: a stores.Watched; None at once where the engine has no watch."""
        gate = self.gate
        return gate.wait_turn(timeout) if gate is not None and gate.policy is not None else None

    def watches(self):
        """Whether wait_turn() can block on the engine (etcd), rather than return None."""
        gate = self.gate
        return gate is not None and gate.policy is not None and gate.token is not None

    def beat(self):
        """The heartbeat: what the last update's gate says the node does, else an idle
        member of its configured group. Nothing without an engine that keeps records."""
        gate = self.gate
        if gate is not None:
            gate.beat()
            return
        c = self.config.coordination
        if not c.backend or coordination.is_fleetlock(c.backend):
            return
        idle = rollout.Gate(rollouts.for_url(c.backend, self.system.clock), None,
                            node_ids.node_id(c, self.paths), c.group, self.system.clock,
                            self.config.rollout.member_ttl, c.max_hold_time)
        with self._lock:  # never over, nor after, the gate an update made meanwhile
            if self.gate is None:
                self.gate = idle
                idle.register(self.current_image(), rollout.MemberState.IDLE)

    def _gate(self, want):
        policy = self.planner.rollout_policy(want)
        if policy is None:
            return None
        c = self.config.coordination
        if not c.backend:
            raise BadInput("image %s comes with a rollout policy, and a rollout needs a "
                           "[coordination] backend (etcd, Redis or ZooKeeper); %s names none"
                           % (want.image_id, self.config.source))
        if c.backend.startswith("file:"):
            raise BadInput("image %s comes with a rollout policy, and [coordination] backend %s "
                           "is one host's directory: a fleet's rollout needs etcd, Redis or "
                           "ZooKeeper" % (want.image_id, c.backend))
        return rollout.Gate(rollouts.for_url(c.backend, self.system.clock), policy,
                            node_ids.node_id(c, self.paths), desired_mod.group_of(want, c.group),
                            self.system.clock, self.config.rollout.member_ttl, c.max_hold_time,
                            blockers.checker(self.system, self.paths))
