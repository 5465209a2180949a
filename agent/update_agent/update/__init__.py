"""One update, end to end: plan, then apply in place or reboot."""
