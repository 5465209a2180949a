"""manifest: exclusions, the text format, and building a manifest of a real tree."""

import hashlib
import logging
import os
import time

import pytest

from update_agent.node import manifest
from update_agent.node.manifest import Entry, Excluder, Sig


def sha(data):
    return hashlib.sha256(data).hexdigest()


def D():
    return Entry("d", 0o755, 0, 0, 0, "", "", "")


def test_excluder_exact_and_glob():
    ex = Excluder(["/etc/ssh", "/etc/ssh/ssh_host_*", "/var/lib/update-agent/"])
    assert "etc/ssh" in ex and "var/lib/update-agent" in ex
    assert "etc/sshd" not in ex
    assert "etc/ssh/ssh_host_rsa_key" in Excluder(["/etc/ssh/ssh_host_*"])
    assert "etc/ssh/sshd_config" not in Excluder(["/etc/ssh/ssh_host_*"])


def test_filter_drops_subtrees_but_not_siblings_with_a_common_prefix():
    keys = ["etc", "etc/ssh", "etc/ssh/sshd_config", "etc/ssh/x/y", "etc/sshd", "etc/sshd/a",
            "etc/ssh-extra", "etc/ssh.d", "etc/ssh0"]
    kept = Excluder(["/etc/ssh"]).filter({k: D() for k in keys})
    assert sorted(kept) == ["etc", "etc/ssh-extra", "etc/ssh.d", "etc/ssh0", "etc/sshd", "etc/sshd/a"]


def test_filter_with_glob_drops_matches_and_their_subtrees():
    keys = ["srv", "srv/a.d", "srv/a.d/x", "srv/a.dx", "srv/b"]
    assert sorted(Excluder(["/srv/*.d"]).filter({k: D() for k in keys})) == \
        ["srv", "srv/a.dx", "srv/b"]


def test_covers_checks_ancestors():
    ex = Excluder(["/var/log"])
    assert ex.covers("var/log/syslog") and ex.covers("var/log")
    assert not ex.covers("var/logs/x") and not ex.covers("var")


def test_glob_in_a_middle_component():
    assert "home/alice/.cache" in Excluder(["/home/*/.cache"])


WEIRD = ["a\tb", "new\nline", "back\\slash", "ends\\", "\\t literal", os.fsdecode(b"caf\xe9"),
         "sp ace"]


def test_dumps_loads_round_trip_with_awkward_names():
    entries = {name: Entry("f", 0o640, 1, 2, 3, sha(name.encode("utf-8", "surrogateescape")),
                           "", "", 1_600_000_000_000000007 + i) for i, name in enumerate(WEIRD)}
    entries["a\tb"] = entries["a\tb"]._replace(mtime=1_700_000_000_123456789)
    entries["link\ttab"] = Entry("l", 0o777, 0, 0, 0, "tar\nget\\" + os.fsdecode(b"\xff"), "", "")
    entries["hard\nb"] = Entry("f", 0o644, 0, 0, 3, sha(b"x"), "ab" * 16, "hard\\a")
    sigs = {"a\tb": Sig(42, 3, 1_700_000_000_123456789, 1_700_000_001_000000001)}
    text = manifest.dumps(entries, sigs)
    assert len(text.split("\n")) == len(entries) + 2  # format line + rows + final ""
    assert manifest.loads(text) == (entries, sigs)


def test_save_load_round_trip_through_bytes(tmp_path):
    entries = {name: D() for name in WEIRD}
    path = str(tmp_path / "m.tsv")
    manifest.save(path, entries)
    assert manifest.load(path) == (entries, {})


def test_a_manifest_read_beside_another_holds_that_ones_equal_entries_not_copies(tmp_path):
    image = {"same": Entry("f", 0o644, 0, 0, 1, sha(b"a"), "", "", 5),
             "changed": Entry("f", 0o644, 0, 0, 1, sha(b"b"), "", "", 5)}
    node = dict(image, changed=image["changed"]._replace(digest=sha(b"c")), extra=D())
    path = str(tmp_path / "node.tsv")
    manifest.save(path, node)
    loaded, _ = manifest.load(path, like=image)
    assert loaded == node
    assert loaded["same"] is image["same"] and loaded["changed"] is not image["changed"]
    fresh = {rel: Entry(*e) for rel, e in node.items()}  # a walk's own objects
    shared = manifest.share(fresh, image)
    assert shared == node and shared["same"] is image["same"]
    assert shared["changed"] == node["changed"] and shared["changed"] is not image["changed"]


def test_loads_rejects_other_text():
    with pytest.raises(ValueError):
        manifest.loads("hello\n")


def test_load_of_missing_or_corrupt_file_is_empty(tmp_path):
    assert manifest.load(str(tmp_path / "none")) == ({}, {})
    (tmp_path / "bad").write_text(manifest.FORMAT_LINE + "\nonly-one-field\n")
    assert manifest.load(str(tmp_path / "bad")) == ({}, {})


@pytest.fixture
def root(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/motd").write_bytes(b"hello\n")
    (tmp_path / "etc/skip").mkdir()
    (tmp_path / "etc/skip/secret").write_bytes(b"s")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/b").write_bytes(b"tool")
    os.link(tmp_path / "bin/b", tmp_path / "bin/a")
    os.symlink("../etc/motd", tmp_path / "bin/motd")
    return tmp_path


def test_build_records_hashes_links_and_hard_link_leader(root):
    entries, sigs = manifest.build(str(root), Excluder(["/etc/skip"]))
    assert sorted(entries) == ["bin", "bin/a", "bin/b", "bin/motd", "etc", "etc/motd"]
    motd = entries["etc/motd"]
    assert (motd.kind, motd.size, motd.digest, motd.link) == ("f", 6, sha(b"hello\n"), "")
    assert entries["bin/motd"].kind == "l" and entries["bin/motd"].digest == "../etc/motd"
    assert entries["bin"].kind == "d"
    assert entries["bin/a"].link == entries["bin/b"].link == "bin/a"
    assert entries["bin/b"].digest == sha(b"tool")
    assert sigs["etc/motd"].ino == os.lstat(root / "etc/motd").st_ino


def test_a_saved_manifest_loads_back_equal_to_a_fresh_build(root, tmp_path_factory):
    # how the planner knows its node cache needs no rewrite: directories included
    cache = str(tmp_path_factory.mktemp("cache") / "manifest")
    manifest.save(cache, *manifest.build(str(root), Excluder([])))
    assert manifest.load(cache) == manifest.build(str(root), Excluder([]))


def test_cached_digest_is_reused_when_signature_matches_and_ctime_is_old(root):
    _, sigs = manifest.build(str(root), Excluder([]))
    sig = sigs["etc/motd"]
    cache = {"etc/motd": (sig, "cached-digest")}
    entries, _ = manifest.build(str(root), Excluder([]), cache=cache,
                                trusted_before_ns=sig.ctime_ns + 1)
    assert entries["etc/motd"].digest == "cached-digest"
    # ctime not older than the trust horizon: rehashed
    entries, _ = manifest.build(str(root), Excluder([]), cache=cache,
                                trusted_before_ns=sig.ctime_ns)
    assert entries["etc/motd"].digest == sha(b"hello\n")


def test_cache_is_ignored_when_the_signature_differs(root):
    _, sigs = manifest.build(str(root), Excluder([]))
    cache = {"etc/motd": (sigs["etc/motd"]._replace(ino=sigs["etc/motd"].ino + 1), "cached")}
    entries, _ = manifest.build(str(root), Excluder([]), cache=cache)
    assert entries["etc/motd"].digest == sha(b"hello\n")


def test_rewrite_at_same_size_and_mtime_is_detected_by_ctime(root):
    path = root / "etc/motd"
    _, sigs = manifest.build(str(root), Excluder([]))
    old = os.lstat(path)
    time.sleep(0.05)  # past the filesystem's timestamp granularity
    with open(path, "r+b") as f:
        f.write(b"HELLO\n")
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    new = os.lstat(path)
    assert (new.st_ino, new.st_size, new.st_mtime_ns) == (old.st_ino, old.st_size, old.st_mtime_ns)
    assert new.st_ctime_ns != old.st_ctime_ns
    cache = {"etc/motd": (sigs["etc/motd"], sha(b"hello\n"))}
    entries, _ = manifest.build(str(root), Excluder([]), cache=cache, trusted_before_ns=None)
    assert entries["etc/motd"].digest == sha(b"HELLO\n")


# --- mtimes and damaged caches --------------------------------------------------

def test_build_records_every_kind_of_entry_with_its_mtime(root):
    os.utime(root / "etc/motd", ns=(1, 1_500_000_000_000000123))
    os.utime(root / "bin/motd", ns=(1, 1_400_000_000_000000000), follow_symlinks=False)
    os.utime(root / "etc", ns=(1, 1_300_000_000_000000000))
    entries, _ = manifest.build(str(root), Excluder([]))
    assert entries["etc/motd"].mtime == 1_500_000_000_000000123
    assert entries["bin/motd"].mtime == 1_400_000_000_000000000  # the link's own, not its target's
    assert entries["etc"].mtime == 1_300_000_000_000000000


def test_a_cache_in_the_old_format_is_rebuilt_never_misread(tmp_path, caplog):
    old = "# update-agent manifest v1\netc/motd\tf\t644\t0\t0\t6\t%s\t\t\t5\t1\t2\n" % sha(b"x")
    (tmp_path / "m").write_text(old)
    caplog.set_level(logging.INFO)
    assert manifest.load(str(tmp_path / "m")) == ({}, {})
    assert "rebuilt" in caplog.text and str(tmp_path / "m") in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "an upgrade is no damage"


ROW = "etc/motd\tf\t644\t0\t0\t6\t%s\t\t\t1700000000000000000" % sha(b"x")
DAMAGED = [
    ("garbage", os.urandom(3000)),
    ("empty", b""),
    ("a JSON object", b'{"etc/motd": "f"}\n'),
    ("a row with a field missing", (manifest.FORMAT_LINE + "\n" + ROW.rsplit("\t", 1)[0] + "\n").encode()),
    ("a row with a field too many", (manifest.FORMAT_LINE + "\n" + ROW + "\tx\n").encode()),
    ("a mode that is not octal", (manifest.FORMAT_LINE + "\n" + ROW.replace("\t644\t", "\t9z\t") + "\n").encode()),
    ("an mtime that is not a number", (manifest.FORMAT_LINE + "\n" + ROW[:-3] + "abc\n").encode()),
    ("an unknown kind", (manifest.FORMAT_LINE + "\n" + ROW.replace("\tf\t", "\tq\t") + "\n").encode()),
    ("a sig of the wrong size", (manifest.FORMAT_LINE + "\n" + ROW + "\t5\n").encode()),
    ("an empty path", (manifest.FORMAT_LINE + "\n" + ROW.replace("etc/motd", "") + "\n").encode()),
]


@pytest.mark.parametrize("name, data", DAMAGED, ids=[d[0] for d in DAMAGED])
def test_a_damaged_cache_is_rebuilt_with_a_one_line_warning(tmp_path, caplog, name, data):
    path = tmp_path / "node-manifest.tsv"
    path.write_bytes(data)
    assert manifest.load(str(path)) == ({}, {})
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    if data:
        assert len(warnings) == 1 and str(path) in warnings[0].getMessage()
        assert "\n" not in warnings[0].getMessage() and "rebuilt" in warnings[0].getMessage()


def test_a_cache_that_is_a_directory_is_rebuilt(tmp_path, caplog):
    (tmp_path / "m").mkdir()
    assert manifest.load(str(tmp_path / "m")) == ({}, {})
    assert "rebuilt" in caplog.text


def test_a_good_row_loads_with_its_mtime():
    entries, _ = manifest.loads(manifest.FORMAT_LINE + "\n" + ROW + "\n")
    assert entries["etc/motd"].mtime == 1700000000000000000


def test_a_path_longer_than_the_system_allows_is_named(tmp_path):
    # built with descriptors: no single path call could name it
    fd = os.open(str(tmp_path), os.O_RDONLY)
    try:
        for _ in range(20):
            os.mkdir("d" * 250, dir_fd=fd)
            nfd = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
    finally:
        os.close(fd)
    with pytest.raises(manifest.PathTooLong) as err:
        manifest.build(str(tmp_path), Excluder([]))
    msg = str(err.value)
    assert "/dddd" in msg and "4095" in msg and "\n" not in msg and len(msg) < 400
    assert err.value.exit_code == 2
