"""`update-agent [--config FILE] fleet (status|halt|resume) ...`: the fleet's rollouts
for operators. It reads and writes the coordination engine only, so it runs from
any machine with the config.

status [--group G] [--image-id ID] [--json]  stages and which is open, each group's
    members, the current wave, slot holders, failures and halts;
halt [--image-id ID] [--reason TEXT]         no node starts a stage step until resumed;
resume [--image-id ID]                       clear the halt (a halted stage's too).
Without --image-id: the rollout created last.
"""

import argparse
import json

from update_agent.coordination import keys, rollouts, stores
from update_agent.decide.rollout import policy as policies, stages as rules
from update_agent.errors import AgentError, BadInput


def parser():
    p = argparse.ArgumentParser(prog="update-agent fleet", description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("status", "halt", "resume"))
    p.add_argument("--group", help="status: only this group's members")
    p.add_argument("--image-id", help="the rollout of this image (default: the newest)")
    p.add_argument("--reason", default="halted by an operator", help="halt: why (status shows it)")
    p.add_argument("--json", action="store_true")
    return p


def main(agent, argv, out):
    args = parser().parse_args(argv)
    config = agent.config.coordination
    if not config.backend:
        raise BadInput("no [coordination] backend in the config (%s)" % agent.config.source)
    records = rollouts.for_url(config.backend, agent.system.clock)
    if args.action == "status" and not args.image_id and not records.rollouts():
        out.write("no rollout on the coordination engine yet: no node has seen a rollout "
                  "policy\n" if not args.json else json.dumps({"rollout": None}) + "\n")
        return 0
    rid, control = _rollout(records, args.image_id)
    now = agent.system.clock()
    if args.action == "halt":
        _halt(records, rid, args.reason, now)
        out.write("rollout of %s halted: %s\n" % (control["image_id"], args.reason))
        return 0
    if args.action == "resume":
        _resume(records, rid, control, now)
        out.write("rollout of %s resumed\n" % control["image_id"])
        return 0
    view = status(records, rid, control, now, args.group)
    out.write(json.dumps(view, indent=2, sort_keys=True) + "\n" if args.json else render(view))
    return 0


def _rollout(records, image_id):
    """(rollout id, control record) of image_id's rollout, or of the newest."""
    if image_id:
        rid = policies.rollout_id(image_id)
        control = records.control(rid)
        if control is None:
            raise AgentError("no rollout of image %r on the coordination engine" % image_id)
        return rid, control
    found = [(c.get("created", 0), rid, c) for rid in records.rollouts()
             for c in [records.control(rid)] if c is not None]
    if not found:
        raise AgentError("no rollout on the coordination engine yet: no node has seen a "
                         "rollout policy")
    _, rid, control = max(found, key=lambda f: f[:2])
    return rid, control


def _policy(control):
    return policies.parse({"stages": control.get("stages") or []},
                          key="rollout", what="the engine's record")


def _halt(records, rid, reason, now):
    def halt(control):
        control = dict(control or {})
        if not control.get("halted"):
            control.update(halted=reason, halted_at=now, halted_by="operator")
        return control, None
    records.update_control(rid, halt)


def _resume(records, rid, control, now):
    policy, sid = _policy(control), keys.attempt(rid, control.get("attempt", 1))
    for i, stage in enumerate(policy.stages):
        targets = sorted(records.members(stage.group))
        if records.stage(sid, i) is not None:
            records.update_stage(sid, i, lambda r, s=stage, t=targets: (
                rules.resume(r, s, t, now), None))

    def clear(control):
        cleared = dict(control or {}, halted="", halted_at=0, halted_by="")
        return cleared, cleared
    cleared = records.update_control(rid, clear)
    # the waiting nodes that may start now look at once, not at their watch's timeout
    records.wake(rules.to_wake(policy, records.stages(sid), records.groups(), cleared, now),
                 "operator")


def status(records, rid, control, now, only_group=None):
    """What an operator sees, as one JSON-able dict."""
    policy = _policy(control)
    stage_records = records.stages(keys.attempt(rid, control.get("attempt", 1)))
    stage_records += [None] * (len(policy.stages) - len(stage_records))
    members = records.groups()
    stages, opened = [], True
    for i, (stage, record) in enumerate(zip(policy.stages, stage_records)):
        targets = sorted(members.get(stage.group, {}))
        stages.append(_stage_view(stage, rules.normal(record), targets, opened))
        opened = bool(stages[-1]["finished"])
    groups = {g: {n: dict(m, in_state_s=round(now - m.get("since", now)))
                  for n, m in sorted(ms.items())}
              for g, ms in sorted(members.items()) if not only_group or g == only_group}
    return {"rollout": rid, "attempt": control.get("attempt", 1), "image_id": control.get("image_id", ""),
            "policy": control.get("policy", ""), "halted": control.get("halted", ""),
            "halted_by": control.get("halted_by", ""), "stages": stages, "groups": groups,
            "slots": _slot_holders(records, groups)}


def _stage_view(stage, record, targets, opened):
    entries = record["nodes"]
    wave = ""
    if stage.waves and targets:
        sizes = rules.wave_sizes(stage, len(targets))
        wave = "%d of %d" % (rules.current_wave(record, stage, len(targets)) + 1, len(sizes))
    finished = rules.is_finished(record, stage, targets)
    return {"name": stage.name, "group": stage.group, "scope": str(stage.scope),
            "run": list(stage.run), "open": opened or bool(entries), "finished": finished,
            "halted": record["halted"] or rules.lost_halt(record, stage, targets),
            "owner": record["owner"], "wave": wave, "targets": len(targets),
            "lost": rules.lost(record, targets),
            "nodes": {n: dict(e) for n, e in sorted(entries.items())}}


def _slot_holders(records, groups):
    found = {}
    with stores.session(records.store) as s:  # one session for every group's record
        for g in groups:
            text, _ = s.get(keys.slot(g))
            holders = (stores.parse(keys.slot(g), text) or {}).get("holders", {})
            if holders:
                found[g] = sorted(holders)
    return found


def render(view):
    lines = ["rollout %s of image %s (policy %s%s)%s" % (
        view["rollout"], view["image_id"], view["policy"][:12],
        ", attempt %d" % view["attempt"] if view["attempt"] > 1 else "",
        "\n  HALTED by %s: %s" % (view["halted_by"], view["halted"]) if view["halted"] else "")]
    for s in view["stages"]:
        state = ("finished" if s["finished"] else "HALTED: " + s["halted"] if s["halted"]
                 else "open" if s["open"] else "waiting")
        lines.append("stage %s (group %s, %s%s): %s" % (
            s["name"], s["group"], s["scope"], ", wave " + s["wave"] if s["wave"] else "", state))
        for node, e in s["nodes"].items():
            lines.append("    %-24s %-10s %s" % (node, e.get("state", ""), e.get("message", "")))
        for node in s["lost"]:
            lines.append("    %-24s LOST: no live member record while its step ran" % node)
    for group, members in view["groups"].items():
        lines.append("group %s: %d live members%s" % (
            group, len(members), "; slots held by " + ", ".join(view["slots"][group])
            if group in view["slots"] else ""))
        for node, m in members.items():
            lines.append("    %-24s %-10s %-20s for %ds" % (node, m.get("state", ""),
                                                          m.get("image_id", ""), m["in_state_s"]))
    return "\n".join(lines) + "\n"
