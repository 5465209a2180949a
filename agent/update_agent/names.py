"""The rule for simple names (groups, node ids, stage and blocker names).

Shared by the config and by metadata, so that a group named in either follows
the same rule: the name becomes part of engine keys and of file names.
"""

import re

SIMPLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SIMPLE_NAME_RULE = "letters, digits, ._-, at most 64 chars, starting with a letter or digit"


def is_simple_name(value):
    return isinstance(value, str) and SIMPLE_NAME.fullmatch(value) is not None
