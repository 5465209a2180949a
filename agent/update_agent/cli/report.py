"""Print plans, results and status for people (text) and machines (--json)."""

import json


def _size(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0


def rollout_text(rollout):
    """What the fleet's rollout says this node does next (a --dry-run's last lines)."""
    return "  rollout: %s (node %s of group %s%s)\n    %s" % (
        rollout["next"], rollout["node"], rollout["group"],
        ", stage " + rollout["stage"] if rollout["stage"] else "", rollout["reason"])


def plan_text(plan):
    d = plan.to_dict()
    ch = d["changes"]
    lines = [
        "plan: %s" % d["action"],
        "  image:   %s (current: %s)" % (d["image_id"], d["current_image_id"] or "none"),
    ]
    if d["kernel"]["image"] or d["kernel"]["running"]:
        lines.append("  kernel:  running %s, image %s" % (d["kernel"]["running"],
                                                        d["kernel"]["image"] or "-"))
    if plan.changes is not None:
        lines.append("  changes: %d changed, %d added, %d deleted, %s to write"
                     % (ch["changed"], ch["added"], ch["deleted"], _size(ch["bytes"])))
    lines.append("  reasons:")
    lines += ["    - %s" % r for r in d["reasons"]]
    return "\n".join(lines)


def fetch_text(fetch):
    """What a repository image's update downloads (a --dry-run's line)."""
    d = fetch.to_dict()
    return "  fetch:   %s in %d requests (%d contents; %d found on the node)" % (
        _size(d["bytes"]), d["requests"], d["contents"], d["local"])


def emit(out, as_json, obj, text):
    if as_json:
        out.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    else:
        out.write(text + "\n")
