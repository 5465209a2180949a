"""The agent's own state dir: journal, atomic files, locks and their checks."""
