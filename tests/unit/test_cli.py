"""cli: what a user sees from the command line itself."""

import io
import os
import signal
import sys

from update_agent.cli import main as cli


class ReentrantStream(io.StringIO):
    """stderr while the main flow is in the middle of writing to it."""

    def write(self, text):
        raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stderr>'>")


def test_a_stop_signal_is_recorded_even_while_stderr_is_busy(monkeypatch):
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        should_stop = cli._stop_on_signals()
        monkeypatch.setattr(sys, "stderr", ReentrantStream())
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except RuntimeError:
            pass
        monkeypatch.setattr(sys, "stderr", io.StringIO())
        assert should_stop(), "the stop was lost"
        assert should_stop()
        assert sys.stderr.getvalue() == "update-agent: signal 15: stopping after the current step\n"
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def test_config_shows_each_section_once(tmp_path):
    from types import SimpleNamespace
    from update_agent import config
    out = io.StringIO()
    agent = SimpleNamespace(config=config.load(str(tmp_path / "absent.conf")))
    assert cli.cmd_config(SimpleNamespace(json=False), agent, out) == 0
    headers = [line for line in out.getvalue().splitlines() if line.startswith("[")]
    assert "[agent]" in headers and len(headers) == len(set(headers)), headers


def _help(*argv):
    out = io.StringIO()
    assert cli.main(list(argv), out=out) == 0
    return out.getvalue()


def test_help_lists_every_command_and_only_the_global_options():
    text = _help("--help")
    for command in cli.COMMANDS + ("slot",):
        assert "\n  %-10s " % command in text, command
    for option in ("--root", "--config", "--metadata", "--json", "--verbose", "--dry-run"):
        assert option in text
    for option in ("--adopt", "--force", "--reason", "--once", "--changes"):
        assert option not in text, option


def test_a_commands_help_shows_its_own_options():
    assert "--reason" in _help("hold", "--help") and "--once" not in _help("hold", "--help")
    text = _help("--root", "/nonexistent", "apply", "-h")
    assert "--adopt" in text and "--force" in text and "--changes" not in text


def test_command_options_still_parse_before_or_after_the_command():
    args = cli.parser().parse_args(["--root", "R", "--metadata", "F", "apply", "--force", "-v"])
    assert (args.command, args.root, args.metadata, args.force, args.verbose) == \
        ("apply", "R", ["F"], True, 1)
    args = cli.parser().parse_args(["--adopt", "--dry-run", "--json"])
    assert args.adopt and args.dry_run and args.json and args.command is None
