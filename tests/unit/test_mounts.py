"""mounts: parsing mountinfo, the mount holding a path, the mounts below a root."""

import logging
import os

from update_agent.node import mounts

MOUNTINFO = r"""22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
30 22 259:3 / /srv/root ro,relatime shared:20 - ext4 /dev/nvme0n1p3 rw
31 30 259:4 / /srv/root/var/lib/update-agent rw,relatime - ext4 /dev/nvme0n1p4 rw
32 30 0:40 / /srv/root/my\040data rw,relatime - tmpfs tmp\040fs rw,size=1024k
33 22 259:5 / /srv/root2 rw,relatime - xfs /dev/sdb1 rw
34 30 0:41 /export /srv/root/boot rw master:3 propagate_from:1 - nfs4 server:/export rw,vers=4.2
"""


def test_parse_fields():
    ms = mounts.parse(MOUNTINFO)
    assert [m.mount_point for m in ms] == [
        "/", "/proc", "/srv/root", "/srv/root/var/lib/update-agent", "/srv/root/my data",
        "/srv/root2", "/srv/root/boot"]
    root = ms[0]
    assert (root.fstype, root.source) == ("ext4", "/dev/nvme0n1p2")
    assert root.options == ("rw", "relatime")
    assert root.super_options == ("rw", "errors=remount-ro")
    assert not root.read_only


def test_parse_escaped_space_and_optional_fields():
    ms = {m.mount_point: m for m in mounts.parse(MOUNTINFO)}
    assert ms["/srv/root/my data"].source == "tmp fs"
    assert ms["/srv/root/boot"].fstype == "nfs4"
    assert ms["/srv/root/boot"].source == "server:/export"


def test_read_only_uses_per_mount_options():
    ms = {m.mount_point: m for m in mounts.parse(MOUNTINFO)}
    assert ms["/srv/root"].read_only          # super options say rw
    assert not ms["/srv/root2"].read_only


def test_mount_of_picks_the_longest_prefix():
    ms = mounts.parse(MOUNTINFO)
    assert mounts.mount_of(ms, "/srv/root/etc/passwd").mount_point == "/srv/root"
    assert mounts.mount_of(ms, "/srv/root/var/lib/update-agent/images").mount_point == \
        "/srv/root/var/lib/update-agent"
    assert mounts.mount_of(ms, "/srv/root2/x").mount_point == "/srv/root2"
    assert mounts.mount_of(ms, "/srv/roo").mount_point == "/"


def test_mount_of_prefers_the_last_of_stacked_mounts():
    ms = mounts.parse(MOUNTINFO + "40 30 0:50 / /srv/root rw - tmpfs over rw\n")
    assert mounts.mount_of(ms, "/srv/root/etc").source == "over"


def test_below_lists_only_mounts_strictly_inside_root():
    ms = mounts.parse(MOUNTINFO)
    assert mounts.below(ms, "/srv/root") == ["boot", "my data", "var/lib/update-agent"]
    assert mounts.below(ms, "/srv/root/") == ["boot", "my data", "var/lib/update-agent"]


def test_is_mount_point():
    ms = mounts.parse(MOUNTINFO)
    assert mounts.is_mount_point(ms, "/srv/root")
    assert not mounts.is_mount_point(ms, "/srv/root/etc")


def test_a_root_writable_anywhere_has_no_unwritten_token(tmp_path):
    # the walk of such a root is never reused: something may write it while the
    # pre-configure hooks run. Only a root whose filesystem is read-only (the
    # superblock, not only the mount, which a writable bind elsewhere bypasses) may.
    from update_agent.node import facts
    root = str(tmp_path)

    def token(mount_opts, fstype, super_opts):
        line = "30 22 259:3 / %s %s - %s /dev/vda %s\n" % (root, mount_opts, fstype, super_opts)
        return facts.unwritten_token(mounts.parse(line), root)
    assert token("rw,relatime", "ext4", "rw") is None           # mounted read-write
    assert token("ro,relatime", "ext4", "rw") is None           # ro mount, rw filesystem
    assert token("ro,relatime", "xfs", "ro") is None            # no write counter to trust


def test_mounts_made_since_the_facts_are_added_and_none_is_forgotten(tmp_path):
    # a pre-configure hook mounts a volume under the root and unmounts another: both
    # stay excluded, and what the node preserves is kept as it was
    from update_agent.node import facts
    root = str(tmp_path)

    def mountinfo(*below):
        return mounts.parse("".join("4%d 30 0:4%d / %s/%s rw - tmpfs vol rw\n" % (i, i, root, m)
                                    for i, m in enumerate(below)))
    before = facts.Facts(root=root, release="6.1", root_is_mount_point=True, root_read_only=True,
                         root_fstype="ext4", state_dir="/var/lib/update-agent", state_on_root_fs=False,
                         state_read_only=False, free_bytes=0, mount_points=("srv/old",),
                         current_image_id="img-1", excluded=("/srv/old", "/var/lib/update-agent", "/srv/old"))
    assert facts.with_current_mounts(before, mountinfo("srv/old")) is before
    after = facts.with_current_mounts(before, mountinfo("var/lib/app"))
    assert after.mount_points == ("srv/old", "var/lib/app")
    assert after.excluded == ("/srv/old", "/var/lib/update-agent", "/srv/old", "/var/lib/app")


def test_the_agents_own_mount_of_the_staged_image_is_not_reported(tmp_path, caplog):
    # the image is opened in the work dir, inside the state dir, under the root: that
    # mount is the agent's own, left alone with the state dir, and no news to anyone
    from update_agent.node import facts
    root = str(tmp_path)
    state = os.path.join(root, "var/lib/update-agent")
    before = facts.Facts(root=root, release="6.1", root_is_mount_point=True, root_read_only=True,
                         root_fstype="ext4", state_dir=state, state_on_root_fs=False,
                         state_read_only=False, free_bytes=0, mount_points=("var/lib/update-agent",),
                         current_image_id="img-1", excluded=("/var/lib/update-agent",) * 2)
    mountinfo = mounts.parse("40 30 0:40 / %s rw - ext4 /dev/loop1 rw\n"
                             "41 40 0:41 / %s/work/img-B ro - ext4 /dev/loop2 ro\n" % (state, state))
    with caplog.at_level(logging.WARNING):
        assert facts.with_current_mounts(before, mountinfo) is before
    assert "since the plan began" not in caplog.text
    # a volume a hook mounts beside it is still news
    mountinfo += mounts.parse("42 30 0:42 / %s/srv/data rw - tmpfs vol rw\n" % root)
    with caplog.at_level(logging.WARNING):
        after = facts.with_current_mounts(before, mountinfo)
    assert after.mount_points == ("srv/data", "var/lib/update-agent")
    assert "since the plan began: /srv/data;" in caplog.text
