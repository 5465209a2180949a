"""A depth limit for metadata documents, checked before anything recurses.

os-apply-config's merge is recursive, so a document nested thousands deep
would end in RecursionError; it is refused as bad input instead.
"""

import json

from update_agent.errors import BadInput

MAX_DEPTH = 64


def depth(value):
    """How deeply dicts and lists nest in value, found without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def check(value, where):
    if depth(value) > MAX_DEPTH:
        raise BadInput("%s: metadata nests deeper than %d levels" % (where, MAX_DEPTH))


def loads(text, where):
    """Parse JSON text; a document too deep for the parser is bad input too."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise BadInput("%s: metadata nests deeper than %d levels" % (where, MAX_DEPTH))
    check(value, where)
    return value
