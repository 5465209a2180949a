"""sync.rsync_argv and write_list: exactly what rsync is told (what the real rsync
then does: tests/integration/test_rsync_files_from.py)."""

import os
import types

from fakes import FakeSystem
from update_agent.apply import sync

EXCLUDED = ["/etc/hostname", "/etc/ssh/ssh_host_*", "/var/lib/update-agent/", "/srv/data"]


def argv(image="/state/images/img-2/tree", root="/"):
    return sync.rsync_argv("/usr/bin/rsync", "/state/work/transfer.list", EXCLUDED, image, root)


def test_options():
    a = argv()
    assert a[0] == "/usr/bin/rsync"
    for opt in ("-aHAX", "--numeric-ids", "--one-file-system", "--ignore-times",
                "--force", "--from0", "--files-from=/state/work/transfer.list"):
        assert opt in a[1:-2]


def test_anchored_excludes_for_preserved_paths_and_account_files():
    excludes = [x for x in argv() if x.startswith("--exclude")]
    assert excludes == [
        "--exclude=/etc/hostname", "--exclude=/etc/hostname/**",
        "--exclude=/etc/ssh/ssh_host_*", "--exclude=/etc/ssh/ssh_host_*/**",
        "--exclude=/var/lib/update-agent", "--exclude=/var/lib/update-agent/**",
        "--exclude=/srv/data", "--exclude=/srv/data/**",
        "--exclude=/etc/passwd", "--exclude=/etc/passwd/**", "--exclude=/etc/group",
        "--exclude=/etc/group/**", "--exclude=/etc/shadow", "--exclude=/etc/shadow/**",
        "--exclude=/etc/gshadow", "--exclude=/etc/gshadow/**"]


def test_source_and_destination_end_in_one_slash():
    assert argv()[-2:] == ["/state/images/img-2/tree/", "/"]
    assert argv("/t/", "/srv/root/")[-2:] == ["/t/", "/srv/root/"]
    assert argv("/t", "/srv/root")[-2:] == ["/t/", "/srv/root/"]


def test_write_list_is_nul_separated_bytes(tmp_path):
    path = tmp_path / "list"
    sync.write_list(str(path), ["etc/motd", "a b\nc", os.fsdecode(b"caf\xe9")])
    assert path.read_bytes() == b"etc/motd\0a b\nc\0caf\xe9\0"


def test_remove_never_follows_a_symlinked_parent(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (outside / "x").mkdir(parents=True)
    (outside / "x" / "victim").write_text("keep me")
    root.mkdir()
    (root / "var").symlink_to(outside)  # e.g. a parent the sync just turned into a link
    assert sync.remove(str(root), "var/x/victim") is False
    assert (outside / "x" / "victim").read_text() == "keep me"


def test_remove_deletes_files_and_whole_directories(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "f").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "d")
    assert sync.remove(str(tmp_path), "link") is True      # the link, not its target
    assert (tmp_path / "d" / "sub" / "f").exists()
    assert sync.remove(str(tmp_path), "d") is True
    assert not (tmp_path / "d").exists()
    assert sync.remove(str(tmp_path), "d") is False         # already gone


def test_a_deletion_around_what_is_left_alone_is_skipped(tmp_path):
    # /d is gone from the image, but a volume was mounted at /d/vol after the plan:
    # removing /d would empty the volume. /e is deleted as planned.
    for d in ("d/vol", "e"):
        (tmp_path / "root" / d).mkdir(parents=True)
        (tmp_path / "root" / d / "data").write_text("x")
    system = FakeSystem()
    plan = types.SimpleNamespace(accounts=(), changes=types.SimpleNamespace(
        transfer=[], deleted_top=["d", "e"], touched=[]))
    sync.sync(system, plan, str(tmp_path / "image"), {}, str(tmp_path / "root"), ("/d/vol",),
              str(tmp_path / "work"))
    assert (tmp_path / "root" / "d" / "vol" / "data").exists()
    assert not (tmp_path / "root" / "e").exists()
    assert system.ran == [["/usr/bin/sync", "--file-system", str(tmp_path / "root")]], \
        "flushed before the step is done"


def test_mtimes_are_set_without_following_a_symlink_on_the_way(tmp_path):
    from update_agent.node.manifest import Entry, Excluder
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "usr").mkdir(parents=True)
    (root / "usr" / "a").write_text("a")
    os.symlink("a", root / "usr" / "link")
    outside.mkdir()
    (outside / "f").write_text("f")
    os.symlink(str(outside), root / "etc")   # a link where the image has a directory
    before = os.stat(outside / "f").st_mtime_ns
    e = Entry("f", 0o644, 0, 0, 1, "", "", "", 10**18)
    plan = types.SimpleNamespace(accounts=(), changes=types.SimpleNamespace(
        transfer=(), deleted_top=(), touched=("usr/a", "usr/link", "etc/f")))
    image = {"usr": e._replace(kind="d", mtime=2 * 10**18), "usr/a": e,
             "usr/link": e._replace(kind="l"), "etc/f": e}
    targets = sync.mtime_targets(plan, image)
    sync.set_mtimes(str(root), targets, str(tmp_path / "no-image"), Excluder(()))
    assert os.lstat(root / "usr" / "a").st_mtime_ns == 10**18
    assert os.lstat(root / "usr" / "link").st_mtime_ns == 10**18, "the link's own time"
    assert os.stat(root / "usr").st_mtime_ns == 2 * 10**18, "the directory holding them"
    assert os.stat(outside / "f").st_mtime_ns == before, "never through a symlink"
