"""What the node is: its paths, facts, mounts, processes and the manifest walk."""
