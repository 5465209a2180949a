"""`update-agent [--config FILE] slot (hold|status|release|clear) ...`: the fleet's
slots for operators.

hold [--group G] [--max N] -- COMMAND...  runs COMMAND holding a lease slot of
the group, releases it when COMMAND ends, and exits with COMMAND's status.
status shows a group's reboot-slot holders (and overdue ones), release drops
this node's reboot slot, clear restarts a group stopped by failed updates.
"""

import argparse
import json
import sys

from update_agent import coordination
from update_agent.coordination import node_id as node_ids
from update_agent.errors import BadInput


def parser():
    p = argparse.ArgumentParser(prog="update-agent slot", description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("hold", "status", "release", "clear"))
    p.add_argument("--group", help="the group (default: the config's)")
    p.add_argument("--max", type=int, dest="max_holders", help="slots in the group")
    p.add_argument("--node-id", help="this node's id (default: the config's, or machine-id)")
    p.add_argument("--timeout", type=int, help="hold: seconds to wait for a slot")
    p.add_argument("--json", action="store_true")
    return p


def main(agent, argv, out):
    command = []
    if "--" in argv:  # hold's command is everything after --
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1:]
    args = parser().parse_args(argv)
    config = agent.config.coordination
    if not config.backend:
        raise BadInput("no [coordination] backend in the config (%s)" % agent.config.source)
    node = args.node_id or node_ids.node_id(config, agent.paths)
    if args.max_holders is not None and args.max_holders < 1:
        raise BadInput("--max %d must be at least 1" % args.max_holders)
    if args.action == "hold":
        if not command:
            raise BadInput("slot hold needs a command: update-agent slot hold -- COMMAND...")
        with coordination.lease_slot(config, node, agent.system.clock, args.group,
                                     args.max_holders, args.timeout, http=agent.system.http):
            sys.stdout.flush()
            return agent.system.run(command, check=False, capture=False).returncode
    slots = coordination.reboot_slots(config, node, agent.system.clock, args.group, args.max_holders,
                                      http=agent.system.http)
    if args.action == "release":
        slots.release()
        return 0
    if args.action == "clear":
        slots.clear()
        return 0
    state = slots.state() if hasattr(slots, "state") else {}
    overdue = coordination.slots.overdue(state, agent.system.clock(), config.max_hold_time)
    state = dict(state, overdue=overdue)
    if args.json:
        out.write(json.dumps(state, indent=2, sort_keys=True) + "\n")
    else:
        out.write("group %s: %d of %d slots held%s\n" % (
            args.group or config.group, len(state.get("holders", {})),
            state.get("max", 0), "; STOPPED: %s" % state["frozen"] if state.get("frozen") else ""))
        for holder, since in sorted(state.get("holders", {}).items()):
            out.write("  %s since %d%s\n" % (holder, since, "  OVERDUE" if holder in overdue else ""))
    return 0
