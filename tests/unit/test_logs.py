"""logs: structured fields reach the journal's send() as keyword fields."""

import logging

import pytest

from update_agent.logs import JournalHandler, log_fields


def test_log_fields_drops_empty_values():
    assert log_fields("img-2", "in-place", "sync", "failed") == {
        "IMAGE_ID": "img-2", "ACTION": "in-place", "STEP": "sync", "RESULT": "failed"}
    assert log_fields("img-2", None, "", result="noop") == {"IMAGE_ID": "img-2", "RESULT": "noop"}
    assert log_fields() == {}


@pytest.fixture
def journal():
    sent = []
    handler = JournalHandler(lambda msg, **kw: sent.append((msg, kw)))
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("update_agent.test_logs")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log, sent, handler
    log.removeHandler(handler)


def test_fields_arrive_as_keywords(journal):
    log, sent, _ = journal
    log.error("image %s failed", "img-2", extra=log_fields("img-2", "in-place", "sync", "failed"))
    (msg, kw), = sent
    assert msg == "image img-2 failed"
    assert kw == {"PRIORITY": "3", "SYSLOG_IDENTIFIER": "update-agent", "LOGGER": "update_agent.test_logs",
                  "IMAGE_ID": "img-2", "ACTION": "in-place", "STEP": "sync", "RESULT": "failed"}


def test_no_fields_without_extra(journal):
    log, sent, _ = journal
    log.info("plain")
    assert not {"IMAGE_ID", "ACTION", "STEP", "RESULT"} & set(sent[0][1])


@pytest.mark.parametrize("level,priority", [(logging.CRITICAL, "3"), (logging.ERROR, "3"),
                                            (logging.WARNING, "4"), (logging.INFO, "6"),
                                            (logging.DEBUG, "7")])
def test_priority(journal, level, priority):
    log, sent, _ = journal
    log.log(level, "x")
    assert sent[0][1]["PRIORITY"] == priority


def test_send_failure_does_not_raise(journal, monkeypatch):
    log, _, handler = journal
    errors = []
    monkeypatch.setattr(handler, "send", lambda *a, **kw: 1 / 0)
    monkeypatch.setattr(handler, "handleError", errors.append)
    log.warning("still fine")
    assert len(errors) == 1 and errors[0].getMessage() == "still fine"
