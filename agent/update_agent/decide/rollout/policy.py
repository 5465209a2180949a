"""The rollout policy: ordered stages, validated like all metadata.

The same JSON object on every node, from metadata (update_agent.rollout) or
from a file the config names. parse() refuses anything it does not know, with
one line naming the dotted key path and the value; the normalized policy
(defaults filled in) has a digest, so that nodes can tell they run the same one.
"""

import dataclasses
import enum
import hashlib
import json
import re

from update_agent import names
from update_agent.decide.image_id import show_value
from update_agent.decide.rollout.amounts import ONE, Amount
from update_agent.decide.rollout.windows import DAYS, Window, parse_hours
from update_agent.errors import BadInput

MAX_STAGES, MAX_WAVES, MAX_WINDOWS, MAX_BLOCKERS = 32, 16, 16, 16
MAX_URL = 4096
UPDATE = "update"
# hook phases a stage may run; apply.hooks.MIGRATION (a test keeps them in step)
PHASES = ("migration",)
URL = re.compile(r"https?://[^\s]+", re.IGNORECASE)

STAGE_KEYS = ("name", "group", "run", "scope", "max_parallel", "waves", "soak", "halt_after",
              "windows", "blockers")


class Scope(enum.StrEnum):
    ALL = "all"
    ONE = "one"


class BlockerKind(enum.StrEnum):
    HOOK = "hook"  # <orc base dir>/blockers.d/<name>: exit 0 = not blocked
    URL = "url"  # must answer 200


@dataclasses.dataclass(frozen=True)
class Blocker:
    kind: BlockerKind
    value: str

    def to_dict(self):
        return {str(self.kind): self.value}


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    group: str
    run: tuple = (UPDATE,)
    scope: Scope = Scope.ALL
    max_parallel: Amount = ONE
    waves: tuple = ()  # of Amount, cumulative; the last one means every target
    soak: int = 0
    halt_after: Amount = ONE
    windows: tuple = ()  # of Window
    blockers: tuple = ()  # of Blocker

    def to_dict(self):
        return {"name": self.name, "group": self.group, "run": list(self.run),
                "scope": str(self.scope), "max_parallel": self.max_parallel.to_json(),
                "waves": [w.to_json() for w in self.waves], "soak": self.soak,
                "halt_after": self.halt_after.to_json(),
                "windows": [w.to_dict() for w in self.windows],
                "blockers": [b.to_dict() for b in self.blockers]}


@dataclasses.dataclass(frozen=True)
class Policy:
    stages: tuple  # of Stage

    def to_dict(self):
        return {"stages": [s.to_dict() for s in self.stages]}

    @property
    def digest(self):
        """sha256 hex of the canonical JSON of the normalized policy: its version."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def of_group(self, group):
        """Indexes of the stages that name group, in order."""
        return tuple(i for i, s in enumerate(self.stages) if s.group == group)


def rollout_id(image_id):
    """One rollout per image id: another image id starts another rollout."""
    return hashlib.sha256(image_id.encode()).hexdigest()[:16]


def _shown(path):
    return repr(path) if path else "(the whole policy)"


def _join(path, key):
    return "%s.%s" % (path, key) if path else key


class _Where:
    """Builds the one-line errors for one source (metadata key or config)."""

    def __init__(self, what):
        self.what = what

    def bad(self, path, value, hint):
        return BadInput("%s %s has invalid value %s (%s)"
                        % (self.what, _shown(path), show_value(value), hint))

    def missing(self, path):
        return BadInput("%s %s is missing" % (self.what, _shown(path)))

    def unknown(self, path, key, known):
        return BadInput("%s %s is not known (known keys: %s)"
                        % (self.what, _shown(_join(path, key)), ", ".join(known)))

    def keys(self, path, raw, known):
        if not isinstance(raw, dict):
            raise self.bad(path, raw, "expected an object")
        for key in raw:
            if key not in known:
                raise self.unknown(path, key, known)

    def items(self, path, raw, limit):
        if not isinstance(raw, list):
            raise self.bad(path, raw, "expected a list")
        if len(raw) > limit:
            raise self.bad(path, raw, "%d entries, at most %d allowed" % (len(raw), limit))
        return raw


def parse(raw, key="update_agent.rollout", what="metadata key"):
    """A Policy from a JSON object (or its text); BadInput names the bad key path."""
    where = _Where(what)
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise where.bad(key, raw, "not JSON: %s" % (str(e) or "nested too deeply"))
    where.keys(key, raw, ("stages",))
    path = _join(key, "stages")
    if "stages" not in raw:
        raise where.missing(path)
    items = where.items(path, raw["stages"], MAX_STAGES)
    if not items:
        raise where.bad(path, items, "a rollout needs at least one stage")
    stages = tuple(_stage(where, "%s[%d]" % (path, i), i, item) for i, item in enumerate(items))
    seen = set()
    for i, s in enumerate(stages):
        if s.name in seen:
            raise where.bad("%s[%d].name" % (path, i), s.name, "stage names must be unique")
        seen.add(s.name)
    return Policy(stages)


def _stage(where, path, index, raw):
    where.keys(path, raw, STAGE_KEYS)
    if "group" not in raw:
        raise where.missing(path + ".group")
    scope = _scope(where, path + ".scope", raw.get("scope", "all"))
    stage = Stage(
        name=_name(where, path + ".name", raw.get("name", "stage-%d" % (index + 1))),
        group=_name(where, path + ".group", raw["group"]),
        run=_run(where, path + ".run", raw.get("run", [UPDATE])),
        scope=scope,
        max_parallel=_amount(where, path + ".max_parallel", raw.get("max_parallel", 1)),
        waves=tuple(_amount(where, "%s.waves[%d]" % (path, i), w)
                    for i, w in enumerate(where.items(path + ".waves", raw.get("waves", []),
                                                      MAX_WAVES))),
        soak=_seconds(where, path + ".soak", raw.get("soak", 0)),
        halt_after=_amount(where, path + ".halt_after", raw.get("halt_after", 1)),
        windows=tuple(_window(where, "%s.windows[%d]" % (path, i), w)
                      for i, w in enumerate(where.items(path + ".windows", raw.get("windows", []),
                                                        MAX_WINDOWS))),
        blockers=tuple(_blocker(where, "%s.blockers[%d]" % (path, i), b)
                       for i, b in enumerate(where.items(path + ".blockers",
                                                         raw.get("blockers", []), MAX_BLOCKERS))),
    )
    if scope == Scope.ONE:
        # exactly one node runs it: several at once, or in waves, cannot be meant
        if stage.max_parallel != ONE:
            raise where.bad(path + ".max_parallel", raw["max_parallel"],
                            "a stage of scope 'one' runs on one node: only 1 is allowed")
        if stage.waves:
            raise where.bad(path + ".waves", raw["waves"],
                            "a stage of scope 'one' runs on one node: it has no waves")
    return stage


def _name(where, path, value):
    if not names.is_simple_name(value):
        raise where.bad(path, value, names.SIMPLE_NAME_RULE)
    return value


def _scope(where, path, value):
    if value not in tuple(Scope):
        raise where.bad(path, value, "expected one of: %s" % ", ".join(Scope))
    return Scope(value)


def _run(where, path, value):
    items = where.items(path, value, 1 + len(PHASES))
    allowed = (UPDATE,) + PHASES
    if not items:
        raise where.bad(path, items, "a stage runs at least one of: %s" % ", ".join(allowed))
    for i, item in enumerate(items):
        if item not in allowed:
            raise where.bad("%s[%d]" % (path, i), item, "expected one of: %s" % ", ".join(allowed))
    if len(set(items)) != len(items):
        raise where.bad(path, items, "each entry at most once")
    if UPDATE in items and items[0] != UPDATE:
        # a hook runs the new image's code, so the update comes first
        raise where.bad(path, items, "'update' must come first: hooks run the new image's code")
    return tuple(items)


def _amount(where, path, value):
    amount = Amount.parse(value)
    if amount is None:
        raise where.bad(path, value, "expected an integer >= 1 or a percentage 'N%' with 0 < N <= 100")
    return amount


def _seconds(where, path, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise where.bad(path, value, "expected whole seconds >= 0")
    return value


def _window(where, path, raw):
    where.keys(path, raw, ("days", "hours"))
    for key in ("days", "hours"):
        if key not in raw:
            raise where.missing("%s.%s" % (path, key))
    days = where.items(path + ".days", raw["days"], len(DAYS))
    if not days:
        raise where.bad(path + ".days", days, "name at least one day")
    for i, day in enumerate(days):
        if day not in DAYS:
            raise where.bad("%s.days[%d]" % (path, i), day, "expected one of: %s" % ", ".join(DAYS))
    if len(set(days)) != len(days):
        raise where.bad(path + ".days", days, "each day at most once")
    if parse_hours(raw["hours"]) is None:
        raise where.bad(path + ".hours", raw["hours"],
                        "expected 'HH:MM-HH:MM' in local time, start != end, end at most 24:00")
    # in week order, so that the same days give the same digest
    return Window(tuple(sorted(days, key=DAYS.index)), raw["hours"])


def _blocker(where, path, raw):
    kinds = tuple(BlockerKind)
    where.keys(path, raw, kinds)
    if len(raw) != 1:
        raise where.bad(path, raw, "expected exactly one of: %s" % ", ".join(kinds))
    (kind, value), = raw.items()
    if kind == BlockerKind.HOOK:
        # a file name in blockers.d: no path, nothing hidden
        return Blocker(BlockerKind.HOOK, _name(where, path + ".hook", value))
    if not isinstance(value, str) or len(value) > MAX_URL or not URL.fullmatch(value):
        raise where.bad(path + ".url", value, "expected an http(s) URL that must answer 200")
    return Blocker(BlockerKind.URL, value)
