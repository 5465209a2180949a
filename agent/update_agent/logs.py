"""Logging: to the journal with structured fields when systemd-python is there,
else to stderr. Records carry IMAGE_ID, ACTION, STEP and RESULT as extras."""

import logging
import os
import sys

FIELDS = ("IMAGE_ID", "ACTION", "STEP", "RESULT")


def log_fields(image_id=None, action=None, step=None, result=None):
    """extra= for a log call: the structured fields the journal gets."""
    values = (image_id, action, step, result)
    return {k: v for k, v in zip(FIELDS, values) if v}


class JournalHandler(logging.Handler):
    """Send each record to journald with our fields (systemd.journal.send)."""

    def __init__(self, send, identifier="update-agent"):
        super().__init__()
        self.send = send
        self.identifier = identifier

    def emit(self, record):
        try:
            fields = {k: str(getattr(record, k)) for k in FIELDS if getattr(record, k, None)}
            self.send(self.format(record), PRIORITY=str(_priority(record.levelno)),
                      SYSLOG_IDENTIFIER=self.identifier, LOGGER=record.name, **fields)
        except Exception:
            self.handleError(record)


def _priority(levelno):
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def journal_send():
    """systemd.journal.send if systemd-python is installed and journald listens, else None."""
    try:
        from systemd import journal
    except ImportError:
        return None
    if not os.path.exists("/run/systemd/journal/socket"):
        return None
    return journal.send


def setup(verbose=0, journal=False):
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    send = journal_send() if journal else None
    if send is not None:
        handler = JournalHandler(send)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("update-agent: %(levelname)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    return send is not None
