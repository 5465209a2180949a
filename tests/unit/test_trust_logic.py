"""trust.check: every component from the node's root down, links followed inside the root."""

import os
import stat

import pytest

from update_agent.node import trust
from update_agent.node.trust import Untrusted

ROOT = "/sandbox/node"


class FakeTree:
    """{host path: (kind, mode, uid, link target)}; lstat and readlink over it."""

    def __init__(self):
        self.entries = {ROOT: ("d", 0o755, 0, "")}
        self.looked_at = []

    def add(self, node_path, kind="d", mode=0o755, uid=0, target=""):
        self.entries[ROOT + node_path] = (kind, mode, uid, target)
        return self

    def lstat(self, path):
        self.looked_at.append(path)
        if path not in self.entries:
            raise FileNotFoundError(path)
        kind, mode, uid, _ = self.entries[path]
        fmt = {"d": stat.S_IFDIR, "f": stat.S_IFREG, "l": stat.S_IFLNK}[kind]
        return os.stat_result((fmt | mode, 0, 0, 1, uid, 0, 0, 0, 0, 0))

    def readlink(self, path):
        return self.entries[path][3]

    def check(self, node_path, **kw):
        return trust.check(ROOT, node_path, "the thing", lstat=self.lstat, readlink=self.readlink, **kw)


def tree():
    return FakeTree().add("/etc").add("/etc/update-agent").add("/etc/update-agent/a.conf", "f", 0o644)


def test_a_root_owned_path_nobody_else_can_write_is_trusted_and_resolved():
    assert tree().check("/etc/update-agent/a.conf") == ROOT + "/etc/update-agent/a.conf"


@pytest.mark.parametrize("mode, reason", [
    (0o664, "is writable by group (mode 0664)"),
    (0o646, "is writable by others (mode 0646)"),
    (0o666, "is writable by group and others (mode 0666)"),
])
def test_a_file_writable_by_others_is_refused_with_its_mode(mode, reason):
    t = tree().add("/etc/update-agent/a.conf", "f", mode)
    with pytest.raises(Untrusted) as e:
        t.check("/etc/update-agent/a.conf")
    assert str(e.value) == "refusing the thing %s/etc/update-agent/a.conf: it %s" % (ROOT, reason)
    assert e.value.exit_code == 2


def test_a_file_owned_by_another_user_is_refused():
    t = tree().add("/etc/update-agent/a.conf", "f", 0o644, uid=1000)
    with pytest.raises(Untrusted, match="it is owned by uid 1000, not root"):
        t.check("/etc/update-agent/a.conf")


def test_a_directory_on_the_path_is_judged_and_named():
    t = tree().add("/etc", mode=0o777)
    with pytest.raises(Untrusted) as e:
        t.check("/etc/update-agent/a.conf")
    assert ": %s/etc is writable by group and others (mode 0777)" % ROOT in str(e.value)


def test_a_sticky_directory_is_not_trusted():
    t = FakeTree().add("/tmp", mode=0o1777).add("/tmp/a.conf", "f", 0o644)
    with pytest.raises(Untrusted, match="/tmp is writable by group and others \\(mode 1777\\)"):
        t.check("/tmp/a.conf")


def test_the_nodes_root_itself_is_judged_but_nothing_above_it():
    t = tree()
    t.entries[ROOT] = ("d", 0o777, 0, "")
    with pytest.raises(Untrusted, match="%s is writable" % ROOT):
        t.check("/etc/update-agent/a.conf")
    t = tree()
    t.check("/etc/update-agent/a.conf")
    assert all(p == ROOT or p.startswith(ROOT + "/") for p in t.looked_at)


def test_a_link_is_followed_inside_the_root_and_its_target_judged():
    t = tree().add("/home").add("/home/user", uid=1000).add("/home/user/x.conf", "f", 0o644)
    t.add("/etc/update-agent/a.conf", "l", 0o777, target="/home/user/x.conf")
    with pytest.raises(Untrusted) as e:
        t.check("/etc/update-agent/a.conf")
    assert str(e.value) == ("refusing the thing %s/etc/update-agent/a.conf: %s/home/user is owned "
                            "by uid 1000, not root" % (ROOT, ROOT))


def test_a_trusted_link_resolves_to_its_target_inside_the_root():
    t = tree().add("/srv").add("/srv/x.conf", "f", 0o600)
    t.add("/etc/update-agent/a.conf", "l", 0o777, target="../../srv/x.conf")
    assert t.check("/etc/update-agent/a.conf") == ROOT + "/srv/x.conf"
    t.add("/etc/update-agent/a.conf", "l", 0o777, target="/../../../srv/x.conf")
    assert t.check("/etc/update-agent/a.conf") == ROOT + "/srv/x.conf"


def test_a_link_owned_by_another_user_is_refused():
    t = tree().add("/srv").add("/srv/x.conf", "f", 0o600)
    t.add("/etc/update-agent/a.conf", "l", 0o777, uid=1000, target="/srv/x.conf")
    with pytest.raises(Untrusted, match="it is owned by uid 1000"):
        t.check("/etc/update-agent/a.conf")


def test_a_link_loop_is_refused_not_followed_forever():
    t = tree().add("/etc/update-agent/a.conf", "l", 0o777, target="/etc/update-agent/a.conf")
    with pytest.raises(Untrusted, match="too many symlinks"):
        t.check("/etc/update-agent/a.conf")


def test_a_missing_path_is_judged_as_far_as_it_exists():
    t = tree()
    assert t.check("/etc/update-agent/conf.d/x.conf", missing_ok=True) == \
        ROOT + "/etc/update-agent/conf.d/x.conf"
    with pytest.raises(Untrusted, match="does not exist"):
        t.check("/etc/update-agent/conf.d/x.conf")
    t.add("/etc/update-agent", mode=0o757)
    with pytest.raises(Untrusted, match="update-agent is writable by others"):
        t.check("/etc/update-agent/conf.d/x.conf", missing_ok=True)


def test_node_path_of_a_host_path():
    assert trust.node_path("/r", "/r/etc/x") == "/etc/x"
    assert trust.node_path("/r", "/r") == "/"
    assert trust.node_path("/r", "/r2/etc") is None
    assert trust.node_path("/r", "/tmp/x") is None
    assert trust.node_path("/", "/tmp/x") == "/tmp/x"


def test_config_refuses_an_untrusted_drop_in_instead_of_skipping_it(tmp_path):
    from update_agent import config
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "a.conf").write_text("[agent]\nhook_timeout = 7\n")
    drop = tmp_path / "conf.d" / "50-x.conf"
    drop.write_text("[agent]\npreserve = /etc/image_id\n")
    os.chmod(drop, 0o646)
    with pytest.raises(Untrusted) as e:
        config.load(str(tmp_path / "a.conf"))
    assert str(e.value) == ("refusing config drop-in %s: it is writable by others (mode 0646)"
                            % drop)
    os.chmod(drop, 0o644)
    c = config.load(str(tmp_path / "a.conf"))
    assert c.agent.hook_timeout == 7 and c.agent.preserve == ("/etc/image_id",)


def test_same_on_host_refuses_a_link_the_host_follows_elsewhere(tmp_path):
    (tmp_path / "node/bin").mkdir(parents=True)
    (tmp_path / "node/bin/hook").write_text("#!/bin/sh\n")
    os.symlink("/nonexistent-on-this-host/hook", tmp_path / "node/link")
    judged = str(tmp_path / "node/bin/hook")
    assert trust.same_on_host(judged, judged, "hook") == judged
    with pytest.raises(Untrusted, match="on this host it leads to /nonexistent-on-this-host/hook"):
        trust.same_on_host(str(tmp_path / "node/link"), judged, "hook")
