"""A Prometheus textfile for node_exporter's textfile collector."""

import os

from update_agent.state import statefile
from update_agent.state.states import Result

FILE = "update_agent.prom"
RESULTS = tuple(Result)  # one gauge each, in this order


def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(current_image_id, outcome=None, staged_bytes=0, held=False, now=0.0):
    lines = [
        "# HELP update_agent_info The image this node runs.",
        "# TYPE update_agent_info gauge",
        'update_agent_info{image_id="%s"} 1' % _label(current_image_id),
        "# HELP update_agent_held 1 while automatic updates are held.",
        "# TYPE update_agent_held gauge",
        "update_agent_held %d" % int(bool(held)),
        "# HELP update_agent_staged_bytes Bytes of images in the cache.",
        "# TYPE update_agent_staged_bytes gauge",
        "update_agent_staged_bytes %d" % staged_bytes,
    ]
    if outcome is not None:
        lines += ["# HELP update_agent_last_result 1 for the result of the last update.",
                  "# TYPE update_agent_last_result gauge"]
        lines += ['update_agent_last_result{result="%s",image_id="%s"} %d'
                  % (r, _label(outcome.image_id), int(outcome.result == r)) for r in RESULTS]
        lines += ["# HELP update_agent_last_duration_seconds Duration of the last update.",
                  "# TYPE update_agent_last_duration_seconds gauge",
                  "update_agent_last_duration_seconds %.3f" % outcome.duration_s,
                  "# HELP update_agent_last_run_timestamp_seconds When the last update ended.",
                  "# TYPE update_agent_last_run_timestamp_seconds gauge",
                  "update_agent_last_run_timestamp_seconds %.0f" % now]
    return "\n".join(lines) + "\n"


def write(directory, text):
    if not directory:
        return
    os.makedirs(directory, exist_ok=True)
    statefile.write_atomic(os.path.join(directory, FILE), text.encode(), mode=0o644)
