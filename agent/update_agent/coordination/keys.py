"""The engine's keys, in one place: what lives where under /update-agent/.

Every record is a JSON text value. docs/coordination.md ("Engine keys") lists
them for operators; keep the two in step.
"""

ROOT = "/update-agent/"
SLOTS = ROOT + "slots/"
MEMBERS = ROOT + "members/"
ROLLOUTS = ROOT + "rollouts/"
WAKE = ROOT + "wake/"
STAGE = "stage-"


def slot(group):
    """A group's reboot-slot record (holders, failures, frozen)."""
    return SLOTS + group


def members(group):
    """The prefix under which a group's members register (the trailing "/"
    keeps group "a" from listing group "ab")."""
    return MEMBERS + group + "/"


def member(group, node):
    return members(group) + node


def wake(node):
    """A waiting node watches its own key here; a node whose step ends writes the
    keys of the nodes that may start next, so that they look now, not at their next poll."""
    return WAKE + node


def rollout(rid):
    """The prefix of one rollout's records."""
    return ROLLOUTS + rid + "/"


def attempt(rid, n):
    """The id under which attempt n of rollout rid keeps its stage records. The
    first is the rollout's own; a later one (the same image rolled out again,
    after the fleet moved on to another) starts from empty records of its own."""
    return rid if n <= 1 else "%s/attempt-%d" % (rid, n)


def control(rid):
    return rollout(rid) + "control"


def stage(rid, i):
    return rollout(rid) + STAGE + str(i)


def stage_index(key, rid):
    """i for the key of stage i of rollout rid, None for any other key."""
    name = key[len(rollout(rid)):] if key.startswith(rollout(rid)) else ""
    number = name[len(STAGE):] if name.startswith(STAGE) else ""
    return int(number) if number.isascii() and number.isdigit() else None


def split(key, prefix):
    """The path segments of key below prefix: split("/a/b/c", "/a/") == ["b", "c"]."""
    return key[len(prefix):].split("/") if key.startswith(prefix) else []
