"""A node count given as a number or as a percentage of a stage's targets."""

import dataclasses
import math
import re

PERCENT = re.compile(r"([1-9][0-9]{0,2})%")


@dataclasses.dataclass(frozen=True)
class Amount:
    value: int
    percent: bool = False

    @classmethod
    def parse(cls, raw):
        """An Amount from an int >= 1 or "N%" (0 < N <= 100); None if raw is neither."""
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
            return cls(raw)
        if isinstance(raw, str):
            m = PERCENT.fullmatch(raw)
            if m and int(m.group(1)) <= 100:
                return cls(int(m.group(1)), percent=True)
        return None

    def resolve(self, count):
        """How many nodes of count: a percentage rounds up and is at least 1."""
        if not self.percent:
            return self.value
        return max(1, math.ceil(self.value * count / 100))

    def to_json(self):
        return "%d%%" % self.value if self.percent else self.value

    def show(self, count):
        """For messages: "50% = 6 of 12 nodes", or "2 of 12 nodes"."""
        if self.percent:
            return "%d%% = %d of %d nodes" % (self.value, self.resolve(count), count)
        return "%d of %d nodes" % (self.value, count)


ONE = Amount(1)
