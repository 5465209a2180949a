"""metrics: the Prometheus textfile is valid text exposition and written atomically."""

import os
import re

from update_agent.daemon import metrics
from update_agent.update.agent import Outcome

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(r"^(%s)(\{%s=%s(?:,%s=%s)*\})? (-?[0-9.e+]+|NaN|[+-]Inf)$"
                    % (NAME, NAME, LABEL_VALUE, NAME, LABEL_VALUE))
HELP = re.compile(r"^# HELP (%s) \S.*$" % NAME)
TYPE = re.compile(r"^# TYPE (%s) (counter|gauge|histogram|summary|untyped)$" % NAME)


def parse(text):
    """{name: [(labels, value)]}, asserting every line is valid exposition."""
    assert text.endswith("\n")
    typed, helped, samples = set(), set(), {}
    for line in text[:-1].split("\n"):
        if m := HELP.match(line):
            helped.add(m.group(1))
        elif m := TYPE.match(line):
            assert m.group(1) not in samples, "TYPE after samples: %r" % line
            typed.add(m.group(1))
        else:
            m = SAMPLE.match(line)
            assert m, "invalid sample line: %r" % line
            assert m.group(1) in typed and m.group(1) in helped, line
            samples.setdefault(m.group(1), []).append((m.group(2) or "", float(m.group(3))))
    return samples


def test_render_without_outcome():
    s = parse(metrics.render("img-1", None, staged_bytes=1234, held=True))
    assert s == {"update_agent_info": [('{image_id="img-1"}', 1.0)],
                 "update_agent_held": [("", 1.0)],
                 "update_agent_staged_bytes": [("", 1234.0)]}


def test_render_with_outcome():
    out = Outcome("img-2", "failed", error="x", duration_s=12.3456)
    s = parse(metrics.render("img-1", out, staged_bytes=0, held=False, now=1700000000.4))
    results = dict(s["update_agent_last_result"])
    assert len(results) == len(metrics.RESULTS)
    assert results['{result="failed",image_id="img-2"}'] == 1.0
    assert sum(results.values()) == 1.0
    assert s["update_agent_last_duration_seconds"] == [("", 12.346)]
    assert s["update_agent_last_run_timestamp_seconds"] == [("", 1700000000.0)]
    assert s["update_agent_held"] == [("", 0.0)]


def test_label_escaping_keeps_exposition_valid():
    s = parse(metrics.render('a"b\\c\nd'))
    (labels, _), = s["update_agent_info"]
    assert labels.startswith('{image_id="a\\"b\\\\c')


def test_label_newline_escaped_as_backslash_n():
    assert 'image_id="a\\nb"' in metrics.render("a\nb")


def test_write_atomic(tmp_path):
    d = tmp_path / "textfile"
    metrics.write(str(d), "one 1\n")
    metrics.write(str(d), metrics.render("img-1"))
    assert os.listdir(d) == ["update_agent.prom"]  # no temporary left behind
    assert (d / "update_agent.prom").read_text() == metrics.render("img-1")
    assert (d / "update_agent.prom").stat().st_mode & 0o777 == 0o644


def test_write_without_directory_does_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metrics.write("", "x 1\n")
    assert os.listdir(tmp_path) == []
