"""Fleet rollouts, pure: the policy (ordered stages) and the rules of a stage.

The engine records (coordination/) are dicts in and dicts out of these
functions; nothing here talks to the engine, reads a clock or a file.
"""
