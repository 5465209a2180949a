"""`update-agent`: argument parsing and wiring only."""

import argparse
import json
import logging
import os
import signal
import sys

from update_agent import __version__, config as config_mod, logs
from update_agent.cli import fleet as fleetcli, publish as publishcli, report, slot as slotcli
from update_agent.daemon import loop as daemon
from update_agent.daemon.notify import Notifier
from update_agent.daemon.watch import CacheWatcher
from update_agent.errors import AgentError, BadInput
from update_agent.http import Http
from update_agent.node import mounts
from update_agent.node.paths import CONFIG_FILE, NodePaths
from update_agent.sources import heat
from update_agent.sources.metadata_url import UrlSource
from update_agent.state import journal
from update_agent.state.statecheck import DamagedState
from update_agent.system import System
from update_agent.update.agent import Agent

LOG = logging.getLogger(__name__)

COMMANDS = ("check", "apply", "reboot", "rollback", "status", "config", "run", "deploy", "history",
            "hold", "unhold", "configure-window")


SUMMARIES = (
    ("check", "print the plan and change nothing (= --dry-run)"),
    ("apply", "carry the plan out"),
    ("reboot", "take the reboot path now, for an image with another kernel"),
    ("rollback", "go back to the previous image"),
    ("status", "what is current, desired, staged and held"),
    ("config", "the effective configuration and where each value came from"),
    ("run", "the daemon"),
    ("deploy", "apply one Heat deployment read from stdin"),
    ("history", "past updates"),
    ("hold", "stop automatic updates"),
    ("unhold", "resume automatic updates"),
    ("configure-window", "--open/--close: a read-only root writable for os-refresh-config's run"),
    ("slot", "the coordination group's slots: status, hold, release, clear"),
    ("fleet", "the fleet's rollouts: status, halt, resume"),
    ("publish", "add an image to an object repository, or prune one (no node needed)"),
)

# commands with sub-actions of their own, parsed by their module: global options go before them
SUBCOMMANDS = {"slot": slotcli, "fleet": fleetcli}

USAGE = "update-agent [global options] COMMAND [options]  (--help lists the commands)"

# (flags, argparse keywords, the commands that use it)
COMMAND_OPTIONS = (
    (("--adopt",), dict(action="store_true", help="take over a root that has no /etc/image_id"),
     ("check", "apply", "reboot")),
    (("--force",), dict(action="store_true",
                        help="an image even though it was rolled back from before"), ("apply",)),
    (("--reason",), dict(default="", help="why updates are held (status shows it)"), ("hold",)),
    (("--once",), dict(action="store_true", help="handle the metadata once and exit"), ("run",)),
    (("--changes",), dict(action="store_true", help="include each update's change list"),
     ("history",)),
    (("-n",), dict(type=int, default=20, metavar="N", help="the last N updates"), ("history",)),
    (("--open",), dict(action="store_true", help="make a read-only root writable (pre-configure.d)"),
     ("configure-window",)),
    (("--close",), dict(action="store_true", help="read-only again, if --open made it writable"),
     ("configure-window",)),
)


def _global_options(p):
    p.add_argument("--dry-run", action="store_true", help="print the plan and change nothing (= check)")
    p.add_argument("--root", default="/", help="the node's root (default /); tests use a sandbox")
    p.add_argument("--config", help="config file (default: <root>/etc/update-agent/update-agent.conf)")
    p.add_argument("--metadata", action="append", default=[], metavar="FILE",
                   help="read metadata from FILE instead of the os-collect-config cache (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    p.add_argument("--version", action="version", version="update-agent " + __version__)


def parser():
    """Parses every invocation: global and command options go before or after the command."""
    p = argparse.ArgumentParser(prog="update-agent", add_help=False, usage=USAGE)
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("command", nargs="?", choices=COMMANDS)
    _global_options(p)
    for flags, kw, _ in COMMAND_OPTIONS:
        p.add_argument(*flags, **kw)
    return p


def help_parser(command=None):
    """What --help shows: the commands and the global options, or one command's own."""
    if command is None:
        p = argparse.ArgumentParser(
            prog="update-agent", usage=USAGE,
            description="Keep this node's root in step with its golden image, in place.",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog="commands:\n" + "\n".join("  %-16s %s" % c for c in SUMMARIES)
                   + "\n\n`update-agent COMMAND --help` shows a command's own options.")
        _global_options(p)
        return p
    p = argparse.ArgumentParser(prog="update-agent [global options] " + command,
                                description=dict(SUMMARIES)[command],
                                epilog="global options: see `update-agent --help`")
    for flags, kw, commands in COMMAND_OPTIONS:
        if command in commands:
            p.add_argument(*flags, **kw)
    return p


def _agent(args):
    if not os.path.isdir(args.root):
        raise BadInput("--root %s is not a directory" % args.root)
    if args.config and not os.path.isfile(args.config):
        raise BadInput("--config %s is not a file" % args.config)
    # the default file by its node path: trust judges every link on the way to it
    default = os.path.join(os.path.abspath(args.root), CONFIG_FILE.lstrip("/"))
    config = config_mod.load(args.config or default, root=args.root)
    paths = NodePaths(args.root, state_dir=config.agent.state_dir)
    return Agent(paths, config, System(http=Http(cafile=config.agent.ca_file)))


def cmd_check(args, agent, out):
    want = agent.planner.desired(args.metadata)
    # staging writes the image cache: not while another agent works on it
    with agent.lock(timeout=10), agent.planner.planned(want, adopt=args.adopt) as planned:
        plan = planned.plan.to_dict()
        text = report.plan_text(planned.plan)
        if planned.fetch is not None:  # a repository image: what the update would download
            plan["fetch"] = planned.fetch.to_dict()
            text += "\n" + report.fetch_text(planned.fetch)
    rollout = agent.rollout_preview(want)
    if rollout is not None:
        plan["rollout"] = rollout
        text += "\n" + report.rollout_text(rollout)
    report.emit(out, args.json, plan, text)
    return 0


def cmd_apply(args, agent, out):
    want = agent.planner.desired(args.metadata) if args.command != "rollback" else None

    def show_plan(plan):
        if not args.json:
            out.write(report.plan_text(plan) + "\n")
            out.flush()
    stop = _stop_on_signals()
    if args.command == "rollback":
        result = agent.rollback(should_stop=stop, on_plan=show_plan)
    else:
        result = agent.update(want, adopt=args.adopt, on_plan=show_plan,
                              should_stop=stop, force_reboot=args.command == "reboot",
                              force=args.force)
    agent.remember(result, want)
    if result.plan is not None:
        report.emit(out, args.json, result.to_dict(), "result: %s" % result.result)
    if result.error:
        sys.stderr.write("update-agent: error: %s\n" % result.error)
    return result.exit_code


def _stop_on_signals():
    """Install SIGTERM/SIGINT handlers; return should_stop().

    The handler only records the signal: a write from inside it could land while
    the main flow is writing the same stream, raise there and lose the stop.
    should_stop(), called from the main flow, says so once."""
    signals = []

    def on_signal(signum, _frame):
        signals.append(signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    told = []

    def should_stop():
        if signals and not told:
            told.append(True)
            sys.stderr.write("update-agent: signal %d: stopping after the current step\n"
                             % signals[0])
        return bool(signals)
    return should_stop


def cmd_status(args, agent, out):
    state = agent.state
    damaged = []  # status shows a damaged journal or image state; it never repairs them
    j = _readable(agent.journal, None, damaged)
    facts = agent.planner.facts()
    images = _readable(state.records.load, {}, damaged)
    daemon_status = state.flags.load_status()
    root_mount = mounts.mount_of(agent.read_mounts(), agent.paths.root)
    history = state.history.last(5)  # read once: a damaged line is warned of once
    obj = {
        "root": agent.paths.root,
        "current_image_id": facts.current_image_id,
        "previous_image_id": (images.get("previous") or {}).get("image_id", ""),
        "desired_image_id": (daemon_status.get("desired") or {}).get("image_id", ""),
        "staged": [{"image_id": s.image_id, "digest": s.digest, "format": s.format}
                   for s in agent.images.staged()],
        "root_read_only": bool(root_mount and root_mount.read_only),
        "unfinished_update": None if j is None or not j.unfinished else {
            "image_id": j.image_id, "status": j.status,
            "step": j.failed_step or j.stopped_at(), "error": j.error,
            "mixed": journal.mixed_root(j)},
        "held": state.flags.hold(),
        "last_result": daemon_status.get("last_result") or (history[-1] if history else None),
        "last_error": daemon_status.get("last_error", ""),
        "history": history,
        "damaged": damaged,
    }
    lines = ["image:    %s" % _image_line(obj),
             "desired:  %s" % (obj["desired_image_id"] or _no_desired(daemon_status)),
             "staged:   %s" % (", ".join(s["image_id"] for s in obj["staged"]) or "nothing"),
             "root:     %s (%s)" % (obj["root"], "read-only" if obj["root_read_only"] else "read-write")]
    u = obj["unfinished_update"]
    journal_damaged = any(d.startswith(state.journal.path + ":") for d in damaged)
    lines.append("update:   " + ("unknown: the journal is damaged" if journal_damaged else
                                 "none in progress" if u is None else
                                 "%s to %s at step %s %s" % (u["status"], u["image_id"], u["step"], u["error"])))
    if u is not None and u["mixed"]:
        lines.append("content:  " + u["mixed"])
    if obj["held"]:
        lines.append("held:     %s (since %s)" % (obj["held"].get("reason") or "no reason given",
                                                  _when(obj["held"].get("since"))))
    last = obj["last_result"]
    if last:
        lines.append("last:     %s %s%s" % (last.get("image_id"), last.get("result"),
                                            " (%s)" % last["error"] if last.get("error") else ""))
    if obj["last_error"]:
        lines.append("error:    %s" % obj["last_error"])
    for rec in obj["history"]:
        lines.append("history:  %s %s -> %s%s" % (rec.get("result"), rec.get("previous_image_id"),
                                                  rec.get("image_id"),
                                                  " (%s)" % (rec.get("root") or rec["error"])
                                                  if rec.get("error") else ""))
    lines += ["damaged:  %s" % d for d in damaged]
    report.emit(out, args.json, obj, "\n".join(lines))
    return 0


def _readable(load, default, damaged):
    """load(), or default with the damage noted (and warned of, on stderr)."""
    try:
        return load()
    except DamagedState as e:
        LOG.warning("%s", e)
        damaged.append(str(e))
        return default


def _image_line(obj):
    if not obj["current_image_id"]:
        return ("none: this root was not deployed from an image (it has no /etc/image_id; "
                "`update-agent --adopt apply` takes it over)")
    return "%s (previous: %s)" % (obj["current_image_id"], obj["previous_image_id"] or "none")


def _no_desired(daemon_status):
    # the daemon and `apply` record what the metadata asks for
    if not daemon_status:
        return ("unknown: the daemon has not run on this root "
                "(`update-agent --dry-run` reads the metadata and shows the plan)")
    return "(the daemon has not seen metadata)"


def _when(ts):
    import datetime
    if not ts:
        return "?"
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_history(args, agent, out):
    records = agent.state.history.last(max(1, args.n))
    if args.changes:
        for rec in records:
            rec["change_lists"] = agent.state.history.load_change_list(rec.get("change_list"))
    lines = []
    for rec in records:
        ch = rec.get("changes") or {}
        lines.append("%s  %-12s %s -> %s  %.1fs  %s changed, %s added, %s deleted%s" % (
            _when(rec.get("started_at")), rec.get("result"), rec.get("previous_image_id") or "none",
            rec.get("image_id"), rec.get("duration_s") or 0, ch.get("changed", "?"),
            ch.get("added", "?"), ch.get("deleted", "?"),
            "  (%s)" % rec["error"] if rec.get("error") else ""))
        for kind in ("changed", "added", "deleted") if args.changes else ():
            lines += ["    %s %s" % (kind[0].upper(), p) for p in (rec.get("change_lists") or {}).get(kind, [])]
    report.emit(out, args.json, records, "\n".join(lines) or "no updates yet")
    return 0


def cmd_hold(args, agent, out):
    agent.state.flags.set_hold(args.reason, agent.system.clock())
    report.emit(out, args.json, {"held": True, "reason": args.reason},
                "automatic updates held%s" % (": " + args.reason if args.reason else ""))
    return 0


def cmd_unhold(args, agent, out):
    was = agent.state.flags.clear_hold()
    report.emit(out, args.json, {"held": False, "was_held": was},
                "automatic updates resumed" if was else "updates were not held")
    return 0


def cmd_configure_window(args, agent, out):
    if args.open == args.close:
        raise BadInput("configure-window: give --open or --close")
    changed = agent.configure_window(args.open)
    root = agent.paths.root
    if args.open:
        text = ("%s remounted read-write for os-refresh-config" % root if changed
                else "%s is writable already: left as it is" % root)
    else:
        text = ("%s read-only again" % root if changed
                else "%s was not opened for os-refresh-config: left as it is" % root)
    report.emit(out, args.json, {"root": root, "open" if args.open else "close": changed}, text)
    return 0


def cmd_run(args, agent, out):
    config = agent.config
    if config.daemon.metadata_url:
        watch = daemon.UrlWatch(UrlSource(config.daemon.metadata_url, config.daemon.metadata_timeout,
                                               opener=agent.system.http))
    else:
        watch = daemon.CacheWatch(agent, CacheWatcher(agent.paths.occ_cache_dir))
    signaller = heat.Signaller(opener=agent.system.http, retries=config.heat.signal_retries,
                               timeout=config.heat.signal_timeout)
    return daemon.Daemon(agent, watch, Notifier(), signaller).run(once=args.once)


def cmd_deploy(args, agent, out):
    try:
        obj = json.loads(sys.stdin.read())
    except ValueError as e:
        raise BadInput("deploy: stdin is not a JSON deployment: %s" % e)
    if not isinstance(obj, dict) or obj.get("group") != heat.GROUP:
        raise BadInput("deploy: expected one deployment object with group %r, got %s"
                       % (heat.GROUP, (obj.get("group") if isinstance(obj, dict) else type(obj).__name__)))
    (d,) = heat.deployments({"deployments": [obj]})
    body, _ = daemon.run_deployment(d, agent.config.agent.image_url_template, agent.update,
                                    agent.config.heat.deploy_actions)
    out.write(json.dumps(body, indent=2, sort_keys=True) + "\n")
    return 0 if body["deploy_status_code"] == 0 else (2 if body["deploy_status_code"] == 2 else 1)


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


def _subcommand(argv, out, name):
    """`slot` and `fleet` have sub-actions (slot hold a trailing command): split off
    the global options before them."""
    i = argv.index(name)
    p = parser()
    args = p.parse_args(argv[:i] + ["status"])
    logs.setup(args.verbose)
    try:
        return SUBCOMMANDS[name].main(_agent(args), argv[i + 1:], out)
    except AgentError as e:
        sys.stderr.write("update-agent: error: %s\n" % e)
        return e.exit_code
    except Exception as e:  # the engine's client libraries raise their own errors
        sys.stderr.write("update-agent: error: coordination backend: %s: %s\n"
                         % (type(e).__name__, str(e).splitlines()[0] if str(e) else ""))
        return 1


def _publish(argv, out):
    """`publish` works on an image and a repository, not on a node: no root, no config."""
    i = argv.index("publish")
    args = parser().parse_args(argv[:i] + ["status"])
    logs.setup(args.verbose)
    rest = argv[i + 1:] + (["--json"] if args.json else [])
    if "-h" in rest or "--help" in rest:
        publishcli.parser().print_help(out)
        return 0
    try:
        return publishcli.main(rest, out)
    except AgentError as e:
        sys.stderr.write("update-agent: error: %s\n" % e)
        return e.exit_code


def main(argv=None, out=None):
    out = out or sys.stdout
    argv = list(sys.argv[1:] if argv is None else argv)
    if "publish" in argv and all(a.startswith("-") for a in argv[:argv.index("publish")]):
        return _publish(argv, out)
    for name in SUBCOMMANDS:
        if name in argv and "--" not in argv[:argv.index(name)]:
            return _subcommand(argv, out, name)
    p = parser()
    args = p.parse_args(argv)
    if args.help:
        help_parser(args.command).print_help(out)
        return 0
    if args.dry_run and args.command not in (None, "check"):
        p.error("--dry-run cannot be combined with %s" % args.command)
    command = "check" if args.dry_run else args.command
    if command is None:
        p.error("give --dry-run or one of: %s" % ", ".join(COMMANDS))
    logs.setup(max(args.verbose, 1) if command == "run" else args.verbose, journal=command == "run")
    try:
        agent = _agent(args)
        if command in ("status", "history", "hold", "unhold"):
            agent.planner.check_state_trust()  # the updating commands check all they rely on
        commands = {"check": cmd_check, "apply": cmd_apply, "reboot": cmd_apply, "rollback": cmd_apply, "status": cmd_status,
                    "config": cmd_config, "run": cmd_run, "deploy": cmd_deploy,
                    "history": cmd_history, "hold": cmd_hold, "unhold": cmd_unhold,
                    "configure-window": cmd_configure_window}
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
