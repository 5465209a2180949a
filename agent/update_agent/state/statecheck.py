"""The shapes of the agent's own state files, checked when they are read.

A state file may be torn by a crash, cut by a full disk, or edited by hand. Its
reader gets the value only once it has the shape its code relies on; otherwise
one DamagedState line names the file, the field and what to do. Which files are
refused and which are rebuilt is the caller's decision (journal, records, history, flags).
"""

import dataclasses
import json
import logging

from update_agent import nesting
from update_agent.errors import AgentError
from update_agent.state.states import Status, StepState

LOG = logging.getLogger(__name__)


class DamagedState(AgentError):
    """A state file is unreadable or not of its shape (exit 1: nothing was changed,
    and the agent cannot go on until the file is repaired)."""

    def __init__(self, path, field, wrong, fix):
        self.path, self.field, self.wrong, self.fix = path, field, wrong, fix
        where = "%s: %s" % (path, field) if field else path
        super().__init__("%s: %s; %s" % (where, wrong, fix))


NUMBER = (int, float)
_JSON_NAMES = ((bool, "true/false"), (dict, "an object"), (list, "an array"), (str, "a string"),
               (int, "a number"), (float, "a number"), (type(None), "null"))


@dataclasses.dataclass(frozen=True)
class Field:
    """What one JSON value must be: its types, and for an object the fields it has
    (shape) or what each of its values is (each); for an array what each item is."""

    types: tuple
    required: bool = False
    shape: dict = None
    each: "Field" = None
    choices: tuple = ()


def _name(value):
    return next(name for t, name in _JSON_NAMES if isinstance(value, t))


def _wanted(types):
    names = []
    for t in types:
        name = dict(_JSON_NAMES)[t]
        if name not in names:
            names.append(name)
    return " or ".join(names)


def _is(value, types):
    # JSON's true is no number: a bool where a number belongs is damage too
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def problem(value, field, name=""):
    """(field name, what is wrong) for the first place value departs from field, or None."""
    if not _is(value, field.types):
        return name, "is %s, not %s" % (_name(value), _wanted(field.types))
    if field.choices and value not in field.choices:
        return name, "is %s, not one of %s" % (json.dumps(value)[:40], ", ".join(field.choices))
    if isinstance(value, dict):
        for key, sub in (field.shape or {}).items():
            if key in value:
                found = problem(value[key], sub, _join(name, key))
                if found:
                    return found
            elif sub.required:
                return _join(name, key), "is missing"
        if field.each is not None:
            for key, item in value.items():
                found = problem(item, field.each, _join(name, key))
                if found:
                    return found
    if isinstance(value, list) and field.each is not None:
        for i, item in enumerate(value):
            found = problem(item, field.each, "%s[%d]" % (name, i))
            if found:
                return found
    return None


def _join(name, key):
    return "%s.%s" % (name, key) if name else key


def parse(data):
    """The JSON value of bytes; raises ValueError saying why they are none."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError("is not UTF-8 text (byte %d)" % e.start)
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nests deeper than %d levels" % nesting.MAX_DEPTH)
    except ValueError as e:
        raise ValueError("is not JSON (%s)" % e)
    if nesting.depth(value) > nesting.MAX_DEPTH:
        raise ValueError("nests deeper than %d levels" % nesting.MAX_DEPTH)
    return value


def _no_constant(name):
    raise ValueError("%s is not a JSON number" % name)


def value_of(path, data, field, fix):
    """The checked value of a state file's bytes; raises DamagedState."""
    try:
        value = parse(data)
    except ValueError as e:
        raise DamagedState(path, "", str(e), fix)
    return check(path, value, field, fix)


def check(path, value, field, fix):
    """value, if it has the shape field says; else raises DamagedState."""
    found = problem(value, field)
    if found:
        name, wrong = found
        raise DamagedState(path, name, wrong if name else "the file " + wrong, fix)
    return value


def load(path, field, fix, missing=None):
    """The checked value of the state file at path (missing if there is none)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return missing
    except OSError as e:
        raise DamagedState(path, "", "cannot be read (%s)" % e.strerror, fix)
    return value_of(path, data, field, fix)


def load_or_warn(path, field, fix, missing=None):
    """A file the agent can do without (a cache): missing when damaged, with one warning."""
    try:
        return load(path, field, fix, missing)
    except DamagedState as e:
        LOG.warning("%s", e)
        return missing


def history_records(data, limit):
    """(the last `limit` good records of history.jsonl's bytes, oldest first,
    [(line number, what is wrong)] of the bad lines among those read).

    A last line without its newline is torn by a crash, not damage: left out unsaid."""
    lines = data.split(b"\n")
    torn = len(lines)  # the last line: b"" when the file ends with its newline
    records, bad = [], []
    for number in range(len(lines), 0, -1):
        if len(records) >= limit:
            break
        line = lines[number - 1]
        if not line.strip():
            continue
        try:
            value = parse(line)
        except ValueError as e:
            if number != torn:
                bad.append((number, str(e)))
            continue
        found = problem(value, HISTORY_RECORD)
        if found:
            name, wrong = found
            bad.append((number, "%s %s" % (name or "the record", wrong)))
            continue
        records.append(value)
    records.reverse()
    return records, bad


# --- the files -------------------------------------------------------------
def _text(required=False):
    return Field((str,), required)


_IMAGE = Field((dict,), shape={"image_id": _text(), "digest": _text()})
STEP_STATES = tuple(StepState)

# read first: a newer agent's journal may have another shape, and must say so
VERSIONED = Field((dict,), shape={"format": Field((int,), True)})
JOURNAL = Field((dict,), shape={
    "format": Field((int,), True),
    "image_id": _text(True), "digest": _text(True),
    "previous_image_id": _text(True), "previous_digest": _text(True),
    "action": _text(True), "root_was_ro": Field((bool,), True),
    "started_at": Field(NUMBER, True),
    "steps": Field((dict,), each=Field((str,), choices=STEP_STATES)),
    "step_s": Field((dict,), each=Field(NUMBER)),
    "status": Field((str,), choices=tuple(Status)),
    "failed_step": _text(), "error": _text(), "restarted": Field((dict,)),
    "kernel": _text(), "old_kernel": _text(), "kept": Field((list,), each=_text()),
    "note": _text(), "boot_id": _text(), "slot_node": _text(),
    "failed_units": Field((list, type(None)), each=_text()),
    "migrate": Field((bool,)),
})

IMAGE_STATE = Field((dict,), shape={"current": _IMAGE, "previous": _IMAGE})

REJECTED = Field((dict,), each=Field((dict,), shape={
    "digest": _text(), "why": _text(), "at": Field(NUMBER)}))

HOLD = Field((dict,), shape={"reason": _text(), "since": Field(NUMBER + (type(None),))})

DEPLOYMENTS = Field((dict,), each=Field((dict,)))

STATUS = Field((dict,), shape={"desired": Field((dict,), shape={"image_id": _text()}),
                               "last_result": Field((dict,)), "last_error": _text(),
                               "updated_at": Field(NUMBER)})

HISTORY_RECORD = Field((dict,), shape={
    "image_id": _text(), "previous_image_id": _text(), "action": _text(), "result": _text(),
    "step": _text(), "error": _text(), "root": _text(), "change_list": _text(),
    "started_at": Field(NUMBER), "ended_at": Field(NUMBER), "duration_s": Field(NUMBER),
    "changes": Field((dict,)), "step_s": Field((dict,)), "restarts": Field((dict,))})

CHANGE_LIST = Field((dict,), shape={kind: Field((list,), each=_text())
                                    for kind in ("changed", "added", "deleted")})

IMAGE_RECORD = Field((dict,), shape={"image_id": _text(True), "digest": _text(True),
                                     "format": _text(True), "url": _text()})
