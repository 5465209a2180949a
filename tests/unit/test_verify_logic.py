"""verify.mismatches: the synced change set against the image's manifest."""

import os

import pytest

from update_agent.node import manifest
from update_agent.apply import verify
from update_agent.decide.changes import ChangeSet
from update_agent.node.manifest import Excluder
from update_agent.decide.plan import Plan


def entries_of(tree):
    return manifest.build(tree, Excluder(()))[0]


@pytest.fixture
def synced(tmp_path):
    """An image tree and a node that holds exactly its change set."""
    image, node = tmp_path / "image", tmp_path / "node"
    for top in (image, node):
        (top / "etc").mkdir(parents=True)
        (top / "etc/motd").write_text("hello B\n")
        (top / "#notes").write_text("top-level name rsync takes as a comment\n")
        os.symlink("motd", top / "etc/link")
        os.chmod(top / "etc/motd", 0o644)
    return image, node


def plan_for(image, transfer, deleted_top=(), accounts=()):
    ch = ChangeSet(changed=tuple(transfer), transfer=tuple(transfer), deleted_top=tuple(deleted_top))
    return Plan("in-place", (), "img-B", "img-A", changes=ch, accounts=tuple(accounts))


def test_a_node_that_holds_the_change_set_verifies(synced):
    image, node = synced
    p = plan_for(image, ["etc/motd", "#notes", "etc/link"])
    assert verify.mismatches(str(node), p, entries_of(str(image)), ()) == []


def test_a_skipped_file_is_named(synced):
    image, node = synced
    (node / "#notes").unlink()
    found = verify.mismatches(str(node), plan_for(image, ["#notes"]), entries_of(str(image)), ())
    assert found == [("#notes", "missing")]


def test_same_size_other_content_is_caught_by_the_hash(synced):
    image, node = synced
    (node / "etc/motd").write_text("hello A\n")
    found = verify.mismatches(str(node), plan_for(image, ["etc/motd"]), entries_of(str(image)), ())
    assert found == [("etc/motd", "content differs")]


def test_mode_owner_and_link_target_differences_are_named(synced):
    image, node = synced
    os.chmod(node / "etc/motd", 0o666)
    os.chown(node / "#notes", 1234, 1234, follow_symlinks=False)
    os.unlink(node / "etc/link")
    os.symlink("elsewhere", node / "etc/link")
    found = dict(verify.mismatches(str(node), plan_for(image, ["etc/motd", "#notes", "etc/link"]),
                                   entries_of(str(image)), ()))
    assert found["etc/motd"] == "mode 666, image has 644"
    assert found["#notes"] == "owner 1234:1234, image has 0:0"
    assert found["etc/link"] == "link target 'elsewhere', image has 'motd'"


def test_a_deleted_path_that_is_back_is_named_unless_left_alone(synced):
    image, node = synced
    (node / "old").mkdir()
    (node / "kept").mkdir()
    p = plan_for(image, [], deleted_top=["old", "kept"])
    found = verify.mismatches(str(node), p, entries_of(str(image)), ("/kept",))
    assert found == [("old", "still present, the image deletes it")]


def test_a_path_left_alone_is_not_checked(synced):
    image, node = synced
    (node / "etc/motd").write_text("a volume's own file\n")
    p = plan_for(image, ["etc/motd"])
    assert verify.mismatches(str(node), p, entries_of(str(image)), ("/etc",)) == []


def test_a_merged_account_file_must_hold_the_merged_text(synced):
    image, node = synced
    (image / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (node / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    os.chmod(image / "etc/passwd", 0o644)
    os.chmod(node / "etc/passwd", 0o644)
    merged = "root:x:0:0::/root:/bin/sh\nop:x:1000:1000::/home/op:/bin/sh\n"
    p = plan_for(image, [], accounts=[("etc/passwd", merged)])
    found = verify.mismatches(str(node), p, entries_of(str(image)), ())
    assert found == [("etc/passwd", "content differs from the merged text")]
    (node / "etc/passwd").write_text(merged)
    assert verify.mismatches(str(node), p, entries_of(str(image)), ()) == []


def test_the_error_names_the_first_paths_and_the_count(synced):
    image, node = synced
    (node / "#notes").unlink()
    (node / "etc/motd").unlink()
    with pytest.raises(verify.VerifyFailed) as e:
        verify.check(str(node), plan_for(image, ["#notes", "etc/motd"]), entries_of(str(image)), ())
    assert str(e.value) == ("2 paths do not match image after the sync: /#notes (missing), "
                            "/etc/motd (missing)")
