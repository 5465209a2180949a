"""changes.diff: the change set between the node's manifest and the image's."""

import pytest

from update_agent.decide.changes import diff
from update_agent.node.manifest import Entry


def F(digest="d1", size=10, mode=0o644, uid=0, gid=0, xattrs="", link=""):
    return Entry("f", mode, uid, gid, size, digest, xattrs, link)


def D(mode=0o755):
    return Entry("d", mode, 0, 0, 0, "", "", "")


def L(target):
    return Entry("l", 0o777, 0, 0, 0, target, "", "")


def test_identical_manifests_give_an_empty_change_set():
    tree = {"etc": D(), "etc/motd": F(), "bin": L("usr/bin")}
    cs = diff(tree, dict(tree))
    assert cs.empty
    assert cs.transfer == () and cs.bytes == 0


def test_same_size_content_change_is_detected():
    # Entries carry no mtime: only content (digest), type, mode, owner, xattrs count.
    cs = diff({"etc/motd": F("old", 10)}, {"etc/motd": F("new", 10)})
    assert cs.changed == ("etc/motd",)
    assert cs.transfer == ("etc/motd",)
    assert cs.bytes == 10


@pytest.mark.parametrize("new", [
    F(mode=0o600), F(uid=1), F(gid=1), F(xattrs="abc"), F(size=11), L("elsewhere"),
])
def test_metadata_and_type_changes_are_changes(new):
    cs = diff({"x": F()}, {"x": new})
    assert cs.changed == ("x",)


def test_added_paths_and_bytes_count_only_files():
    node = {"etc": D()}
    image = {"etc": D(), "etc/new": D(), "etc/new/a": F(size=7), "etc/b": L("a")}
    cs = diff(node, image)
    assert cs.added == ("etc/b", "etc/new", "etc/new/a")
    assert cs.transfer == cs.added
    assert cs.bytes == 7


def test_deleted_tree_is_removed_from_its_topmost_dir():
    node = {"opt": D(), "opt/app": D(), "opt/app/bin": D(), "opt/app/bin/x": F(), "etc": D()}
    cs = diff(node, {"etc": D()})
    assert cs.deleted == ("opt", "opt/app", "opt/app/bin", "opt/app/bin/x")
    assert cs.deleted_top == ("opt",) and cs.transfer == ()


def test_node_only_dirs_holding_protected_paths_are_kept():
    node = {"srv": D(), "srv/state": D(), "srv/state/junk": F()}
    cs = diff(node, {}, protected=["srv/state/db"])
    assert cs.kept == ("srv", "srv/state")
    assert cs.deleted == ("srv/state/junk",)
    assert cs.deleted_top == ("srv/state/junk",) and cs.transfer == ()


def test_protected_ancestor_replaced_by_non_directory_is_a_conflict():
    node = {"etc": D(), "etc/network": D()}
    image = {"etc": D(), "etc/network": L("/run/network")}
    cs = diff(node, image, protected=["etc/network/interfaces"])
    assert len(cs.conflicts) == 1
    assert "/etc/network" in cs.conflicts[0] and "symlink" in cs.conflicts[0]
    assert "etc/network" not in cs.changed + cs.transfer


def test_protected_ancestor_changing_mode_only_is_no_conflict():
    cs = diff({"etc": D(0o755)}, {"etc": D(0o750)}, protected=["etc/hostname"])
    assert cs.conflicts == ()
    assert cs.changed == ("etc",)


def test_hard_link_group_is_transferred_whole():
    node = {"bin/a": F("old", link="bin/a"), "bin/b": F("old", link="bin/a"), "bin/c": F()}
    image = {"bin/a": F("new", link="bin/a"), "bin/b": F("new", link="bin/a"), "bin/c": F()}
    node["bin/b"] = image["bin/b"]  # b already matches: only a differs
    cs = diff(node, image)
    assert cs.changed == ("bin/a",)
    assert cs.transfer == ("bin/a", "bin/b")
    assert cs.bytes == 20


def test_untouched_hard_link_group_is_not_transferred():
    image = {"bin/a": F(link="bin/a"), "bin/b": F(link="bin/a"), "bin/c": F("x")}
    node = dict(image, **{"bin/c": F("y")})
    assert diff(node, image).transfer == ("bin/c",)


def test_skip_paths_are_ignored_everywhere():
    node = {"etc": D(), "etc/passwd": F("n"), "etc/group": F()}
    image = {"etc": D(), "etc/passwd": F("i"), "etc/shadow": F()}
    cs = diff(node, image, skip=["etc/passwd", "etc/group", "etc/shadow"])
    assert cs.empty and cs.transfer == () and cs.bytes == 0


# --- mtimes: touched, never changed ---------------------------------------------

def T(entry, mtime):
    return entry._replace(mtime=mtime)


def test_a_content_identical_path_with_another_mtime_is_touched_not_changed():
    node = {"usr": T(D(), 1), "usr/a.py": T(F("a"), 1), "usr/lib": T(L("x"), 1), "usr/same": T(F("s"), 5)}
    image = {"usr": T(D(), 2), "usr/a.py": T(F("a"), 2), "usr/lib": T(L("x"), 2), "usr/same": T(F("s"), 5)}
    cs = diff(node, image)
    assert cs.touched == ("usr", "usr/a.py", "usr/lib")
    assert cs.changed == () and cs.transfer == () and cs.bytes == 0
    assert cs.summary()["touched"] == 3
    assert cs.empty, "giving mtimes needs no quiet services"


def test_a_changed_path_is_not_also_touched():
    cs = diff({"f": T(F("old"), 1)}, {"f": T(F("new"), 2)})
    assert cs.changed == ("f",) and cs.touched == ()


def test_a_hard_link_member_transferred_with_its_group_is_not_touched():
    node = {"a": T(F("x", link="a"), 1), "b": T(F("x", link="a"), 1)}
    image = {"a": T(F("y", link="a"), 2), "b": T(F("x", link="a"), 2)}
    image["b"] = image["b"]._replace(digest="y")
    node["b"] = node["b"]._replace(digest="y")  # b's content is already the image's
    cs = diff(node, image)
    assert "b" in cs.transfer and cs.touched == ()


def test_skipped_and_added_paths_are_never_touched():
    cs = diff({"etc/passwd": T(F("p"), 1)}, {"etc/passwd": T(F("p"), 2), "new": T(F("n"), 2)},
              skip=["etc/passwd"])
    assert cs.touched == () and cs.added == ("new",)
