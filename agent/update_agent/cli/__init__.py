"""The command line: argument parsing, wiring and report rendering. Nothing imports it."""
