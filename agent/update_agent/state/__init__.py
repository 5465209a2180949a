"""The agent's own state dir: the journal, image records, history and flags, atomic
files, locks and their checks."""
