"""Pure decisions: the plan and everything it weighs. No I/O here."""
