"""Is this test process in a mount namespace of its own? (Then mounting is safe.)"""

import os


def private_mount_namespace():
    """True in the namespace tools/test made (it says so), or in one that an
    ancestor process is not in (pid 1's may be unreadable, so ancestors are walked)."""
    mine, pid = os.readlink("/proc/self/ns/mnt"), os.getpid()
    if os.environ.get("UPDATE_AGENT_TEST_MOUNT_NS") == mine:
        return True
    while pid > 1:
        with open("/proc/%d/stat" % pid) as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])  # ppid
        try:
            if os.readlink("/proc/%d/ns/mnt" % pid) != mine:
                return True
        except OSError:
            continue
    return False
