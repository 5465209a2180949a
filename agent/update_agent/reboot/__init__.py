"""The reboot path: the steps before and after a reboot into a new kernel."""
