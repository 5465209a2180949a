"""The suite's own layout: pytest imports test modules by their base name."""

import collections
import os

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_no_two_test_files_share_a_name():
    seen = collections.defaultdict(list)
    for d, _, files in os.walk(TESTS):
        for name in files:
            if name.startswith("test_") and name.endswith(".py"):
                seen[name].append(os.path.relpath(os.path.join(d, name), TESTS))
    clashes = {n: paths for n, paths in seen.items() if len(paths) > 1}
    assert not clashes, "pytest cannot collect both of: %s" % clashes
