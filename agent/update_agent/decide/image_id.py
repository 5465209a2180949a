"""The rule an image id must follow: file names are made from it.

Here rather than in sources/ because the node's committed id (node/facts.py)
is checked by the same rule as the one metadata asks for.
"""

import re

from update_agent.errors import BadInput

# File names are built from an image_id, and a name holds at most 255 bytes: the
# longest is the temporary of a change list, ".<time>-<image_id>.json.XXXXXXXX", 27
# bytes besides the id until the year 5138. 200 leaves room for a longer suffix.
MAX_IMAGE_ID = 200
IMAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]*")


def show_value(value, limit=80):
    """An untrusted value for a one-line message: its repr, a long one cut."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...(%d chars)" % len(text)


def validate_image_id(value, key="image_id", what="metadata key"):
    """value, if it is a valid image id; else BadInput naming what and key it came from."""
    named = "%s %r" % (what, key)
    if value is None:
        raise BadInput("%s is missing" % named)
    if not isinstance(value, str):
        raise BadInput("%s must be a string, got %s %s"
                       % (named, type(value).__name__, show_value(value)))
    if len(value) > MAX_IMAGE_ID:
        raise BadInput("%s is too long: %s is %d chars, the limit is %d (file "
                       "names are made from it)" % (named, show_value(value, 40), len(value),
                                                    MAX_IMAGE_ID))
    if not IMAGE_ID.fullmatch(value) or ".." in value:
        raise BadInput("%s has invalid value %s (allowed: letters, digits, "
                       "'._:+-', no '..', at most %d chars)" % (named, show_value(value),
                                                                 MAX_IMAGE_ID))
    return value
