"""The rollout gate: one update's place in the fleet's ordered stages.

The stage rules are pure (decide/rollout/stages.py). This reads the records
they decide on from the engine (coordination/rollouts.py) and writes back, by
compare-and-swap, what they decided: the node's member record, the rollout's
control record and the node's entry in a stage. A stage step is taken in the
same compare-and-swap that checks its halt, so no node starts one after a halt
is recorded.
"""

import dataclasses
import datetime
import logging

from update_agent.coordination import keys
from update_agent.decide.rollout import stages as rules, windows
from update_agent.decide.rollout.policy import rollout_id
from update_agent.decide.rollout.stages import MemberState, NextKind
from update_agent.state.states import Result

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Turn:
    """A stage step this node holds: run it, then finish it."""

    rid: str
    index: int
    stage: object  # decide.rollout.policy.Stage
    group: str = ""
    max_parallel: int = 1  # resolved against the stage's live targets: the group's slot budget

    def runs(self, phase):
        return phase in self.stage.run


@dataclasses.dataclass(frozen=True)
class NotYet:
    """Why the node does not run a stage step now (a decide.rollout.stages.Next)."""

    kind: NextKind
    reason: str


# how a turn's update ended: the node's step is done, failed, or still running
# (rebooting, waiting for a reboot slot or an operator, interrupted, a failed download)
SUCCEEDED = (Result.SUCCESS, Result.NOOP)
FAILED = (Result.FAILED, Result.REFUSED, Result.ROLLED_BACK, Result.UNHEALTHY)


VERDICT_KINDS = {rules.Wait: NextKind.WAIT, rules.Halted: NextKind.HALTED,
                 rules.Failed: NextKind.FAILED, rules.AlreadyDone: NextKind.WAIT}


class Gate:
    def __init__(self, records, policy, node, group, clock, member_ttl, reboot_ttl,
                 blocked=lambda blocker: ""):
        """blocked(Blocker) -> why the blocker holds the node back, "" if it does not."""
        self.records, self.policy, self.node, self.group = records, policy, node, group
        self.clock, self.member_ttl, self.reboot_ttl = clock, member_ttl, reboot_ttl
        self.blocked = blocked
        self.member = None  # (image id, MemberState, since): what the heartbeat repeats
        self.written = None  # when the member record was last written, or its life extended
        self.written_member = None  # the member tuple that record says
        self.token = None  # where this node's wake-ups stood before its last look
        self.seen = ([], {}, None)  # (stage records, live members by group, control) last read

    def register(self, image_id, state):
        """This node is a live member of its group, doing state. A rebooting node
        stays a member for as long as a reboot may take."""
        same = self.member is not None and self.member[:2] == (image_id, state)
        since = self.member[2] if same else self.clock()
        self.member = (image_id, state, since)
        if same and self.written is not None and self.clock() - self.written < self.member_ttl / 3:
            return  # nothing new to say, and the heartbeat is not due: every poll need not write
        self.beat()

    def beat(self):
        """The heartbeat: write the member record again, before its ttl runs out."""
        if self.member is None:
            return
        image_id, state, since = self.member
        if self.written_member == self.member and self.records.keep(self.group, self.node):
            self.written = self.clock()  # the same record lives on: no write (etcd: its lease)
            return
        ttl = self.reboot_ttl if state == MemberState.REBOOTING else self.member_ttl
        self.records.register(self.group, self.node, {"image_id": image_id, "state": str(state),
                                                      "since": since}, ttl)
        self.written, self.written_member = self.clock(), self.member

    def control(self, image_id):
        """The rollout's control record; the first node creates it with its policy
        (one read when it exists: the common case on every look)."""
        rid = rollout_id(image_id)
        found = self.records.control(rid)
        if found is not None:
            return found
        now = self.clock()

        def create(record):
            if record is not None:
                return record, record
            new = {"image_id": image_id, "policy": self.policy.digest,
                   "stages": self.policy.to_dict()["stages"], "created": now,
                   "halted": "", "halted_at": 0, "halted_by": ""}
            return new, new
        return self.records.update_control(rid, create)

    def _targets(self, with_records=False):
        """Each stage group's live members, from one read of every group's: their
        names only, unless with_records (kept in self.seen for _wake_next)."""
        if with_records:
            live = self.records.groups()
            self.seen = (self.seen[0], live, self.seen[2])
        else:
            live = self.records.group_names()
        return {g: sorted(live.get(g, ())) for g in {s.group for s in self.policy.stages}}

    def next(self, image_id):
        """(what the rules say this node does next, a Next; the stage records; the
        targets): three reads of the engine."""
        control = self.control(image_id)
        records = self.records.stages(_attempt(image_id, control))
        targets = self._targets()
        self.seen = (records, self.seen[1], control)
        return rules.next_for(self.policy, self.node, self.group, records, targets,
                              control, self.clock()), records, targets

    def preview(self, image_id):
        """What next() would say, reading only: for --dry-run, which writes nothing
        (not even this node's member record, so it is counted here as if it were)."""
        control = self.records.control(rollout_id(image_id))
        targets = self._targets()
        targets[self.group] = sorted(set(targets.get(self.group, ())) | {self.node})
        return rules.next_for(self.policy, self.node, self.group,
                              self.records.stages(_attempt(image_id, control)), targets, control,
                              self.clock())

    def enter(self, image_id):
        """A Turn to run now, or a NotYet saying why not (done: kind DONE)."""
        self.token = self.records.wake_token(self.node)  # before the look: no wake-up is missed
        step, records, all_targets = self.next(image_id)
        if step.kind != NextKind.RUN:
            return NotYet(step.kind, step.reason)
        stage = self.policy.stages[step.stage]
        resuming = _holds(records, step.stage, self.node)
        if not resuming:
            # windows and blockers before a step is taken, never while one is held
            why = self._closed(stage)
            if why:
                return NotYet(NextKind.WAIT, "stage %s: %s" % (stage.name, why))
        targets = all_targets[stage.group]
        now = self.clock()

        def take(record):
            return rules.take(record, stage, self.node, targets, now)
        sid = _attempt(image_id, self.seen[2])
        verdict = self.records.update_stage(sid, step.stage, take)
        if isinstance(verdict, rules.Granted) and not resuming:
            halted = self._halted_meanwhile(image_id, sid, step.stage)
            if halted is not None:
                return halted
        if isinstance(verdict, rules.Granted):
            LOG.info("rollout of %s: %s", image_id, verdict.reason)
            return Turn(sid, step.stage, stage, stage.group,
                        stage.max_parallel.resolve(len(targets)))
        # the records moved between the read and the swap (another node took the
        # last place, or a halt): what the swap saw decides
        return NotYet(VERDICT_KINDS.get(type(verdict), NextKind.WAIT), verdict.reason)

    def again(self, image_id):
        """Start another attempt of image_id's rollout, from empty stage records: the
        one on record finished, and the fleet moved on to another image since (this
        node among them), so going back to image_id is a rollout of its own. A
        compare-and-swap: of the nodes that find it so, one starts the attempt."""
        seen = (self.seen[2] or {}).get("attempt", 1)
        now = self.clock()

        def next_attempt(control):
            if control is None or control.get("attempt", 1) != seen:
                return control, None  # another node started it first
            return dict(control, attempt=seen + 1, created=now, policy=self.policy.digest,
                        stages=self.policy.to_dict()["stages"], halted="", halted_at=0,
                        halted_by=""), None
        self.records.update_control(rollout_id(image_id), next_attempt)
        LOG.info("rollout of %s: finished before, and the fleet moved on since: attempt %d",
                 image_id, seen + 1)

    def _halted_meanwhile(self, image_id, sid, index):
        """A NotYet if an operator halted the rollout between the read and the take:
        the step goes back, so no step starts after a halt is recorded (the halt is
        written before this read, or the take came first and started before it)."""
        control = self.records.control(rollout_id(image_id)) or {}
        if not control.get("halted"):
            return None
        self.records.update_stage(sid, index,
                                  lambda record: (rules.withdraw(record, self.node), None))
        return NotYet(NextKind.HALTED, "the rollout of image %s was halted by %s: %s"
                      % (image_id, control.get("halted_by") or "?", control["halted"]))

    def _closed(self, stage):
        """Why stage may not start here now (outside its windows, or a blocker), or ""."""
        is_open, why = windows.window_open(stage.windows,
                                           datetime.datetime.fromtimestamp(self.clock()))
        if not is_open:
            return why
        for blocker in stage.blockers:
            why = self.blocked(blocker)
            if why:
                return why
        return ""

    def finish(self, turn, ok, message=""):
        """Record how this node's step of the stage ended (a failure may halt the stage)."""
        targets = self._targets(with_records=True)[turn.stage.group]
        now = self.clock()

        def record(current):
            new = rules.finish(current, turn.stage, self.node, ok, message, now, targets)
            return new, new
        finished = self.records.update_stage(turn.rid, turn.index, record)
        LOG.info("rollout %s: %s %s stage %s%s", turn.rid, self.node,
                 "succeeded in" if ok else "failed", turn.stage.name,
                 "" if ok else ": %s" % message)
        self._wake_next(turn.index, finished)

    def _wake_next(self, index, finished):
        """Wake the waiting nodes that may start now that this step is done (its
        place is free, or its stage finished): they need not wait for their next look."""
        records, live, control = self.seen
        records = list(records) + [None] * (index + 1 - len(records))
        records[index] = finished
        self.records.wake(rules.to_wake(self.policy, records, live, control, self.clock()),
                          self.node)

    def wait_turn(self, timeout):
        """After a look that said wait: block until a node wakes this one, or timeout.
        A stores.Watched; None where the engine has no watch (the caller polls)."""
        if self.token is None:
            return None
        return self.records.wait_for_wake(self.node, self.token, timeout)


def _attempt(image_id, control):
    """The id of the stage records of the rollout attempt control names."""
    return keys.attempt(rollout_id(image_id), (control or {}).get("attempt", 1))


def _holds(records, index, node):
    """Whether node's step of stage index is under way already (a resume)."""
    record = records[index] if index < len(records) else None
    return rules.normal(record)["nodes"].get(node, {}).get("state") == rules.Entry.STARTED


def run(gate, image_id, current_image_id, update_once, not_yet):
    """Update through the rollout: update_once(turn) -> Outcome for each stage step
    the rules give this node now (turn None: none is due, so nothing may change);
    not_yet(NotYet) -> the Outcome of a node that must wait, or is halted."""
    done = None  # the outcome of the step that updated the node, this call
    again = True  # at most one new attempt per call
    for _ in range(len(gate.policy.stages) + 1):
        gate.register(current_image_id, MemberState.WAITING)
        entered = gate.enter(image_id)
        if again and _done_elsewhere(entered, image_id, current_image_id):
            gate.again(image_id)
            entered, again = gate.enter(image_id), False
        if isinstance(entered, NotYet):
            return _not_entered(gate, entered, image_id, current_image_id, update_once,
                                not_yet, done)
        gate.register(current_image_id, MemberState.RUNNING)
        outcome = update_once(entered)
        if outcome.result == Result.REBOOTING:
            gate.register(current_image_id, MemberState.REBOOTING)
        if outcome.result in FAILED and outcome.plan is not None:
            gate.finish(entered, False, outcome.error)
            gate.register(current_image_id, MemberState.FAILED)
        if outcome.result not in SUCCEEDED:
            return outcome  # failed, or the step goes on (its entry stays started)
        gate.finish(entered, True)
        current_image_id = image_id
        done = outcome if outcome.result == Result.SUCCESS else done or outcome
    return done


def _done_elsewhere(entered, image_id, current_image_id):
    """The rollout of image_id is done with this node, which runs another image now."""
    return (isinstance(entered, NotYet) and entered.kind == NextKind.DONE
            and current_image_id != image_id)


def _not_entered(gate, entered, image_id, current_image_id, update_once, not_yet, done):
    if entered.kind == NextKind.DONE and current_image_id == image_id:
        gate.register(current_image_id, MemberState.IDLE)
        return done or update_once(None)
    if entered.kind == NextKind.DONE:  # every step of its group done, yet not on the image
        entered = NotYet(NextKind.HALTED, "%s; but this node runs %s, not %s: it changes "
                         "only in a new rollout" % (entered.reason, current_image_id or "no image",
                                                     image_id))
    if done is not None and entered.kind == NextKind.WAIT:
        # updated; a later stage of its group is still to come
        return not_yet(NotYet(entered.kind, "updated to %s; %s" % (image_id, entered.reason)))
    gate.register(current_image_id, MemberState.FAILED if entered.kind == NextKind.FAILED
                  else MemberState.WAITING)
    return not_yet(entered)
