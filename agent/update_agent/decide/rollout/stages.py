"""Pure: the rules of a rollout's stages, on the engine's stage records.

A stage record (one per rollout and stage, written with compare-and-swap):
  {"nodes": {node: {"state": "started|succeeded|failed", "at": t, "message": "..."}},
   "owner": "" or node (scope one), "halted": "" or why, "finished": 0 or t}
Records go in, new records come out; the input is never changed. `targets` are
the live members of the stage's group (node names). Like coordination/slots.py,
these functions decide and never talk to anything: the caller writes back a
returned record whenever it differs from the one it read (a take can halt).

Failures below halt_after do not hold a stage up: a failed node is done with the
stage (it does not try again in this rollout), and the next wave opens and the
stage finishes without it. That is what halt_after tolerates.
"""

import dataclasses
import datetime
import enum

from update_agent.decide.rollout.policy import Scope


class MemberState(enum.StrEnum):
    """What a member record says the node is doing."""

    IDLE = "idle"
    WAITING = "waiting"
    RUNNING = "running"
    REBOOTING = "rebooting"
    FAILED = "failed"


class Entry(enum.StrEnum):
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class Verdict:
    reason: str = ""


class Granted(Verdict):
    """The node runs the stage step now (a started entry is written)."""


class Wait(Verdict):
    """Not yet: the reason says what the node waits for."""


class Halted(Verdict):
    """The stage is halted: no node starts a step until an operator resumes."""


class Failed(Verdict):
    """This node failed the stage: it does not try again in this rollout."""


class AlreadyDone(Verdict):
    """Nothing left for this node in the stage."""


def empty():
    return {"nodes": {}, "owner": "", "halted": "", "finished": 0}


def normal(record):
    """A copy of record with every field present; nested entries copied too."""
    record = dict(empty(), **(record or {}))
    record["nodes"] = {n: dict(e) for n, e in record["nodes"].items()}
    return record


def _count(record, state):
    return sum(1 for e in record["nodes"].values() if e.get("state") == state)


def lost(record, targets):
    """Nodes whose entry is started but who are no live member: reported, counted as failed."""
    live = set(targets)
    return sorted(n for n, e in normal(record)["nodes"].items()
                  if e.get("state") == Entry.STARTED and n not in live)


def _running(record, targets):
    """Started entries of live nodes: the steps in progress."""
    live = set(targets)
    return sorted(n for n, e in record["nodes"].items() if e.get("state") == Entry.STARTED and n in live)


def _failures(record, targets):
    return _count(record, Entry.FAILED) + len(lost(record, targets))


def _fleet_size(record, targets):
    """The nodes a stage concerns: its live targets and every node that has an entry."""
    return len(set(targets) | set(record["nodes"]))


def complete(record, stage, targets):
    """Done now: the owner succeeded (one), or every live target succeeded or failed (all).

    A lost node is not a target: it counts as a failure instead (halt_after)."""
    record = normal(record)
    nodes = record["nodes"]
    if stage.scope == Scope.ONE:
        owner = record["owner"]
        return bool(owner) and nodes.get(owner, {}).get("state") == Entry.SUCCEEDED
    done = (Entry.SUCCEEDED, Entry.FAILED)
    return (bool(targets) and _count(record, Entry.SUCCEEDED) > 0
            and all(nodes.get(n, {}).get("state") in done for n in targets))


def is_finished(record, stage, targets):
    """Sticky: once finished, a stage stays finished whoever joins later."""
    return bool(normal(record)["finished"]) or complete(record, stage, targets)


def mark_finished(record, stage, targets, now):
    record = normal(record)
    if not record["finished"] and not record["halted"] and complete(record, stage, targets):
        record["finished"] = now
    return record


def lost_halt(record, stage, targets):
    """The halt reason lost nodes bring about, or ""."""
    record = normal(record)
    gone = lost(record, targets)
    if not gone:
        return ""
    if stage.scope == Scope.ONE and record["owner"] in gone:
        # a migration may not be idempotent: never run it twice behind the operator's back
        return "%s died running stage %s; not run again automatically" % (record["owner"], stage.name)
    return _threshold_halt(record, stage, targets, gone[-1], "lost (no live member record)")


def _threshold_halt(record, stage, targets, last, message):
    fleet = _fleet_size(record, targets)
    k, limit = _failures(record, targets), stage.halt_after.resolve(fleet)
    if k < limit:
        return ""
    return "%d of %d nodes failed stage %s, the last %s: %s" % (k, fleet, stage.name, last, message)


def _halt(record, why):
    if why and not record["halted"]:
        record["halted"] = why
    return record


def _label(stage):
    return "stage %s (group %s)" % (stage.name, stage.group)


def _stopped(stage, why):
    return Halted("%s is halted: %s; `update-agent fleet resume` goes on" % (_label(stage), why))


def take(record, stage, node, targets, now):
    """(new record, verdict) for node asking to run its step of stage.

    Besides a started entry, the new record may carry a halt (lost nodes) or
    the stage's finish, seen here first: the caller writes back any change."""
    record = mark_finished(normal(record), stage, targets, now)
    record = _halt(record, lost_halt(record, stage, targets))
    if record["halted"]:
        return record, _stopped(stage, record["halted"])
    entry = record["nodes"].get(node, {})
    state = entry.get("state")
    if state == Entry.SUCCEEDED:
        return record, AlreadyDone("%s succeeded in stage %s" % (node, stage.name))
    if state == Entry.FAILED:
        return record, Failed("%s failed stage %s: %s; not tried again for this image"
                              % (node, stage.name, entry.get("message", "") or "no message"))
    if state == Entry.STARTED:
        return record, Granted("%s resumes its step of stage %s" % (node, stage.name))
    if stage.scope == Scope.ONE:
        return _take_one(record, stage, node, now)
    verdict = _admit(record, stage, targets, now)
    if verdict is not None:
        return record, verdict
    return _start(record, node, now), Granted("%s starts stage %s" % (node, stage.name))


def _start(record, node, now):
    record["nodes"][node] = {"state": Entry.STARTED.value, "at": now, "message": "", "started": now}
    return record


def _take_one(record, stage, node, now):
    owner = record["owner"]
    if owner and owner != node:
        if complete(record, stage, ()):
            return record, AlreadyDone("%s ran stage %s for group %s" % (owner, stage.name, stage.group))
        return record, Wait("%s runs stage %s (group %s); waiting at its barrier"
                            % (owner, stage.name, stage.group))
    record["owner"] = node
    why = "%s runs stage %s for group %s" % (node, stage.name, stage.group)
    return _start(record, node, now), Granted(why)


def _admit(record, stage, targets, now):
    """None if a new node may start now, else the Wait saying why not."""
    count = len(targets)
    running = _running(record, targets)
    limit = stage.max_parallel.resolve(count)
    if len(running) >= limit:
        return Wait("%s: max_parallel %s: %d started (%s), waiting"
                    % (_label(stage), stage.max_parallel.show(count), len(running), ", ".join(running)))
    if not stage.waves or is_finished(record, stage, targets):
        return None  # a joiner of a finished stage is bounded by max_parallel only
    return _wave_gate(record, stage, targets, now)


def wave_sizes(stage, count):
    """Cumulative node counts of the stage's waves; the last is every target."""
    sizes = [min(w.resolve(count), count) for w in stage.waves[:-1]]
    return sizes + [count]


def current_wave(record, stage, count):
    """Index of the wave the last node to enter belongs to (0 before anyone entered)."""
    taken = len(record["nodes"])
    sizes = wave_sizes(stage, count)
    return next((i for i, size in enumerate(sizes) if max(taken - 1, 0) < size), len(sizes) - 1)


def _wave_gate(record, stage, targets, now):
    count, taken = len(targets), len(record["nodes"])
    sizes = wave_sizes(stage, count)
    wave = current_wave(record, stage, count)
    last = wave == len(sizes) - 1
    if taken < sizes[wave] or last:
        return None  # the open wave has room (the last one takes every node)
    name = "wave %d of %d (%s)" % (wave + 1, len(sizes), stage.waves[wave].show(count))
    running = _running(record, targets)  # a lost node is a failure, not a step in progress
    if running:
        return Wait("%s: %s is full: %d started, waiting" % (_label(stage), name, len(running)))
    successes = [e.get("at", 0) for e in record["nodes"].values() if e.get("state") == Entry.SUCCEEDED]
    opens = max(successes, default=0) + stage.soak
    if now < opens:
        return Wait("%s: %s is done; soaking until %s (%d s after its last success), "
                    "then wave %d opens" % (_label(stage), name, _clock(opens), stage.soak, wave + 2))
    return None


def _clock(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def withdraw(record, node):
    """Give back a step just taken (the rollout was halted meanwhile): as if never taken."""
    record = normal(record)
    if record["nodes"].get(node, {}).get("state") == Entry.STARTED:
        del record["nodes"][node]
        if record["owner"] == node:
            record["owner"] = ""
    return record


def finish(record, stage, node, ok, message, now, targets):
    """Record node's result; failures reaching halt_after halt the stage."""
    record = normal(record)
    state = Entry.SUCCEEDED if ok else Entry.FAILED
    # "at" is when the entry took its state; "started" when the step began
    started = record["nodes"].get(node, {}).get("started", now)
    record["nodes"][node] = {"state": state.value, "at": now, "message": message,
                             "started": started}
    if not ok:
        if stage.scope == Scope.ONE:
            # the group's one step failed: nobody else will run it, so the stage cannot finish
            why = "%s failed stage %s: %s; not run again automatically" % (node, stage.name, message)
        else:
            why = _threshold_halt(record, stage, targets, node, message)
        record = _halt(record, why)
    return mark_finished(record, stage, targets, now)


def resume(record, stage, targets, now):
    """`fleet resume`: clear the halt, the operator having looked at its cause.

    Lost nodes become failed (else they would halt the stage again at once);
    failed nodes stay failed. A scope-one step whose runner failed or died is
    handed back, so that one node runs it again: resuming is the operator's
    decision to run it again, which is never taken automatically."""
    record = normal(record)
    record["halted"] = ""
    for node in lost(record, targets):
        record["nodes"][node] = {"state": Entry.FAILED.value, "at": now,
                                 "message": "lost while running the stage"}
    owner = record["owner"]
    if stage.scope == Scope.ONE and record["nodes"].get(owner, {}).get("state") == Entry.FAILED:
        record["owner"] = ""
        del record["nodes"][owner]
    return record


class NextKind(enum.StrEnum):
    RUN = "run"
    WAIT = "wait"
    HALTED = "halted"
    FAILED = "failed"
    DONE = "done"
    NOT_TARGETED = "not-targeted"


@dataclasses.dataclass(frozen=True)
class Next:
    kind: NextKind
    reason: str = ""
    stage: int = -1  # index of the stage concerned; -1 when none


_NEXT = {Granted: NextKind.RUN, Wait: NextKind.WAIT, Halted: NextKind.HALTED, Failed: NextKind.FAILED}


def next_for(policy, node, group, stage_records, members_by_group, control, now):
    """What node (of group) does next in the rollout: a Next.

    stage_records: one record (or None) per stage, in order; members_by_group:
    group -> its live members (names, or a dict keyed by name); control: the
    rollout's control record (or None before it is created)."""
    own = policy.of_group(group)
    if not own:
        return Next(NextKind.NOT_TARGETED, "no stage of the rollout names group %s (stages: %s)" % (
            group, ", ".join("%s (group %s)" % (s.name, s.group) for s in policy.stages)))
    stopped = _rollout_stop(policy, control)
    if stopped is not None:
        return stopped
    records = [normal(r) for r in list(stage_records or ())[:len(policy.stages)]]
    records += [empty() for _ in range(len(policy.stages) - len(records))]
    targets = [sorted(members_by_group.get(s.group, ())) for s in policy.stages]
    for i, (stage, record) in enumerate(zip(policy.stages, records)):
        why = record["halted"] or lost_halt(record, stage, targets[i])
        if why:
            return Next(NextKind.HALTED, _stopped(stage, why).reason, i)
    for i in range(own[-1] + 1):
        stage, record = policy.stages[i], records[i]
        if not _open(i, policy, records, targets):
            before = policy.stages[i - 1]
            return Next(NextKind.WAIT, "%s opens when %s has finished: %s" % (
                _label(stage), _label(before), _progress(records[i - 1], before, targets[i - 1])), i - 1)
        if stage.group != group:
            continue
        _, verdict = take(record, stage, node, targets[i], now)
        if not isinstance(verdict, AlreadyDone):
            return Next(_NEXT[type(verdict)], verdict.reason, i)
    return Next(NextKind.DONE, "%s is done with every stage of group %s (%s)" % (
        node, group, ", ".join(policy.stages[i].name for i in own)))


def to_wake(policy, stage_records, members_by_group, control, now):
    """The waiting members that may start a step now, to be woken: per open stage,
    its group's members that have waited longest, as many as take() would let in.

    members_by_group: group -> {node: member record}. A node left out here still
    gets its turn at its own next look; this only spares the wait for it. So a
    stage the halt or a policy mismatch stops wakes nobody."""
    if _rollout_stop(policy, control) is not None:
        return []
    records = [normal(r) for r in list(stage_records or ())[:len(policy.stages)]]
    records += [empty() for _ in range(len(policy.stages) - len(records))]
    targets = [sorted(members_by_group.get(s.group, ())) for s in policy.stages]
    if any(r["halted"] or lost_halt(r, s, t) for s, r, t in zip(policy.stages, records, targets)):
        return []
    woken = []
    for i, (stage, record) in enumerate(zip(policy.stages, records)):
        if not _open(i, policy, records, targets):
            break
        for node in _longest_waiting(members_by_group.get(stage.group, {}), record, woken):
            record, verdict = take(record, stage, node, targets[i], now)
            if not isinstance(verdict, Granted):
                break
            woken.append(node)
    return woken


def _longest_waiting(members, record, woken):
    """Waiting members with no entry in the stage, longest waiting first."""
    waiting = [(m.get("since", 0), n) for n, m in members.items()
               if m.get("state") == MemberState.WAITING and n not in record["nodes"] and n not in woken]
    return [n for _, n in sorted(waiting)]


def _rollout_stop(policy, control):
    control = control or {}
    if control.get("halted"):
        return Next(NextKind.HALTED, "the rollout of image %s is halted by %s: %s; "
                    "`update-agent fleet resume` goes on" % (
                        control.get("image_id", "?"), control.get("halted_by") or "?",
                        control["halted"]))
    digest = control.get("policy", "")
    if digest and digest != policy.digest:
        # never overwritten: the nodes must agree on one policy first
        return Next(NextKind.WAIT, "the rollout of image %s runs policy %s, this node has policy %s: "
                    "waiting until every node is given the same rollout policy" % (
                        control.get("image_id", "?"), digest[:12], policy.digest[:12]))
    return None


def _open(i, policy, records, targets):
    """Stage 0 is open; stage i when stage i-1 finished. A stage someone entered
    stays open, so that a joiner of an earlier stage blocks no later one."""
    if i == 0 or records[i]["nodes"]:
        return True
    return is_finished(records[i - 1], policy.stages[i - 1], targets[i - 1])


def _progress(record, stage, targets):
    if stage.scope == Scope.ONE:
        owner = record["owner"]
        state = record["nodes"].get(owner, {}).get("state", "")
        return "%s %s it" % (owner, state) if owner else "no node has started it"
    counts = {state: _count(record, state) for state in Entry}
    return "%d of %d live nodes succeeded, %d started, %d failed" % (
        counts[Entry.SUCCEEDED], len(targets), len(_running(record, targets)),
        counts[Entry.FAILED] + len(lost(record, targets)))
