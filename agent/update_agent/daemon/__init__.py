"""The long-running loop: watching metadata, notifying systemd, metrics."""
