"""`update-agent`: argument parsing and wiring only."""

import argparse
import logging
import os
import sys

from update_agent import config as config_mod
from update_agent import logs, mounts, report
from update_agent.errors import AgentError
from update_agent.paths import NodePaths
from update_agent.system import System
from update_agent.update import Agent

LOG = logging.getLogger(__name__)

COMMANDS = ("check", "apply", "status", "config")


def parser():
    p = argparse.ArgumentParser(
        prog="update-agent",
        description="Keep this node's root in step with its golden image, in place.")
    p.add_argument("command", nargs="?", choices=COMMANDS,
                   help="check: print the plan; apply: carry it out; status: what is current; "
                        "config: the effective configuration and where each value came from")
    p.add_argument("--dry-run", action="store_true", help="print the plan and change nothing (= check)")
    p.add_argument("--root", default="/", help="the node's root (default /); tests use a sandbox")
    p.add_argument("--config", help="config file (default: <root>/etc/update-agent/update-agent.conf)")
    p.add_argument("--metadata", action="append", default=[], metavar="FILE",
                   help="read metadata from FILE instead of the os-collect-config cache (repeatable)")
    p.add_argument("--adopt", action="store_true",
                   help="take over a root that has no /etc/image_id")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    return p


def _agent(args):
    if not os.path.isdir(args.root):
        raise AgentError("--root %s is not a directory" % args.root)
    probe = NodePaths(args.root)
    config = config_mod.load(args.config or probe.config_file)
    paths = NodePaths(args.root, state_dir=config.state_dir)
    return Agent(paths, config, System())


def cmd_check(args, agent, out):
    want = agent.desired(args.metadata)
    with agent.planned(want, adopt=args.adopt) as planned:
        report.emit(out, args.json, planned.plan.to_dict(), report.plan_text(planned.plan))
    return 0


def cmd_apply(args, agent, out):
    want = agent.desired(args.metadata)

    def show_plan(plan):
        if not args.json:
            out.write(report.plan_text(plan) + "\n")
            out.flush()
    result = agent.update(want, adopt=args.adopt, on_plan=show_plan)
    if result.plan is not None:
        report.emit(out, args.json, result.to_dict(), "result: %s" % result.result)
    if result.error:
        sys.stderr.write("update-agent: error: %s\n" % result.error)
    return result.exit_code


def cmd_status(args, agent, out):
    state = agent.state
    j = state.load_journal()
    facts = agent.facts()
    images = state.load_state()
    root_mount = mounts.mount_of(agent.read_mounts(), agent.paths.root)
    obj = {
        "root": agent.paths.root,
        "current_image_id": facts.current_image_id,
        "previous_image_id": (images.get("previous") or {}).get("image_id", ""),
        "root_read_only": bool(root_mount and root_mount.read_only),
        "unfinished_update": None if j is None or not j.unfinished else {
            "image_id": j.image_id, "status": j.status,
            "step": j.failed_step or j.stopped_at(), "error": j.error},
        "history": state.history(5),
    }
    lines = ["image:    %s (previous: %s)" % (obj["current_image_id"] or "none",
                                              obj["previous_image_id"] or "none"),
             "root:     %s (%s)" % (obj["root"], "read-only" if obj["root_read_only"] else "read-write")]
    u = obj["unfinished_update"]
    lines.append("update:   " + ("none in progress" if u is None else
                                 "%s to %s at step %s %s" % (u["status"], u["image_id"], u["step"], u["error"])))
    for rec in obj["history"]:
        lines.append("history:  %s %s -> %s%s" % (rec.get("result"), rec.get("previous_image_id"),
                                                  rec.get("image_id"),
                                                  " (%s)" % rec["error"] if rec.get("error") else ""))
    report.emit(out, args.json, obj, "\n".join(lines))
    return 0


def cmd_config(args, agent, out):
    rows = config_mod.describe(agent.config)
    obj = {"%s.%s" % (section, key): {"value": list(value) if isinstance(value, tuple) else value,
                                      "from": origin}
           for section, key, value, origin in rows}
    lines, section_seen = [], None
    for section, key, value, origin in rows:
        if section != section_seen:
            lines.append("[%s]" % section)
            section_seen = section
        shown = ", ".join(value) if isinstance(value, tuple) else str(value).lower() \
            if isinstance(value, bool) else str(value)
        lines.append("%s = %s    # %s" % (key, shown, origin))
    report.emit(out, args.json, obj, "\n".join(lines))
    return 0


def main(argv=None, out=None):
    out = out or sys.stdout
    p = parser()
    args = p.parse_args(argv)
    if args.dry_run and args.command not in (None, "check"):
        p.error("--dry-run cannot be combined with %s" % args.command)
    command = "check" if args.dry_run else args.command
    if command is None:
        p.error("give --dry-run or one of: %s" % ", ".join(COMMANDS))
    logs.setup(args.verbose)
    try:
        agent = _agent(args)
        commands = {"check": cmd_check, "apply": cmd_apply, "status": cmd_status,
                    "config": cmd_config}
        return commands[command](args, agent, out)
    except AgentError as e:
        sys.stderr.write("update-agent: error: %s\n" % e)
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("update-agent: interrupted\n")
        return 1
    except Exception as e:  # an operator needs one line, the developer the traceback
        LOG.debug("unexpected error", exc_info=True)
        sys.stderr.write("update-agent: error: unexpected %s: %s (run with -vv for details)\n"
                         % (type(e).__name__, e))
        return 1
