"""Maintenance windows: days and hours in the node's local time.

A window names the days it starts on; one that crosses midnight
("22:00-02:00") runs into the next morning, so Saturday 01:00 is inside
{"days": ["fri"], "hours": "22:00-02:00"}. The time is an argument: nothing
here reads a clock.
"""

import dataclasses
import re

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOURS = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])")
DAY_MINUTES = 24 * 60


@dataclasses.dataclass(frozen=True)
class Window:
    days: tuple  # of DAYS, in the order given
    hours: str  # "HH:MM-HH:MM"

    @property
    def span(self):
        return parse_hours(self.hours)

    def to_dict(self):
        return {"days": list(self.days), "hours": self.hours}

    def show(self):
        return "%s %s" % (",".join(self.days), self.hours)


def parse_hours(text):
    """(start, end) in minutes of the day, or None if text is not a valid span.

    The end may be 24:00; a span is never empty (start == end is refused)."""
    m = HOURS.fullmatch(text) if isinstance(text, str) else None
    if not m:
        return None
    start = int(m.group(1)) * 60 + int(m.group(2))
    end = int(m.group(3)) * 60 + int(m.group(4))
    if end > DAY_MINUTES or start == end:
        return None
    return start, end


def _inside(window, weekday, minute):
    start, end = window.span
    today, yesterday = DAYS[weekday], DAYS[(weekday - 1) % 7]
    if start < end:
        return today in window.days and start <= minute < end
    # crosses midnight: the evening of a named day, or the morning after one
    return (today in window.days and minute >= start) or (yesterday in window.days and minute < end)


def window_open(windows, local):
    """(open, why) for a local datetime. No windows: always open."""
    if not windows:
        return True, "no maintenance window is set"
    weekday, minute = local.weekday(), local.hour * 60 + local.minute
    now = "%s %02d:%02d local time" % (DAYS[weekday], local.hour, local.minute)
    for w in windows:
        if _inside(w, weekday, minute):
            return True, "inside maintenance window %s (%s)" % (w.show(), now)
    return False, "outside every maintenance window (%s); it is %s" % (
        "; ".join(w.show() for w in windows), now)
