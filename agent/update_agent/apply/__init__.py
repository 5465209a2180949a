"""Applying a plan to the root: the in-place steps, sync, hooks, live processes, health."""
