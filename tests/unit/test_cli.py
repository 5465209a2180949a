"""cli: what a user sees from the command line itself."""

import io
import os
import signal
import sys

import pytest

from update_agent import cli


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
