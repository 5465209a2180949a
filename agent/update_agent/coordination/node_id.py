"""This node's name in the fleet's coordination store: the config's node_id,
else /etc/machine-id, else the host name."""

import socket


def node_id(config, paths):
    if config.node_id:
        return config.node_id
    try:
        with open(paths.node("/etc/machine-id"), encoding="utf-8") as f:
            mid = f.read().strip()
        if mid:
            return mid
    except OSError:
        pass
    return socket.gethostname()
