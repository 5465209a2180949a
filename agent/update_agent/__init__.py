"""update-agent: keep a node's root in step with its golden image, in place."""

__version__ = "0.1.0"
