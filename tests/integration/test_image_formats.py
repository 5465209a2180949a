"""Every image format opens to the tree it was built from, and leaves nothing behind.

Real tools, real loop devices and mounts: run as root inside a private mount
namespace, e.g.
    PYTHONPATH=agent:tools unshare -m --propagation private python3 -m pytest tests/integration
"""

import io
import os
import shutil
import stat
import sys
import tarfile
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
for _p in ("agent", "tools"):
    _p = os.path.join(HERE, "..", "..", _p)
    if _p not in sys.path:
        sys.path.insert(0, os.path.abspath(_p))

import imagebuild  # noqa: E402
from update_agent.errors import AgentError, BadInput  # noqa: E402
import mountns  # noqa: E402
from update_agent.images import formats  # noqa: E402
from update_agent.system import System  # noqa: E402

TOOLS = ("losetup", "mount", "umount", "blkid", "sfdisk", "mkfs.ext4", "mkfs.xfs",
         "mksquashfs", "qemu-img", "tar", "zstd", "dd")


def _why_skip():
    if os.geteuid() != 0:
        return "needs root for loop devices and mounts"
    if not mountns.private_mount_namespace():
        return "refusing to mount in the host's namespace: run under unshare -m --propagation private"
    with open("/proc/self/mountinfo") as f:
        if "shared:" in f.read():
            return "mounts would propagate out (shared mounts): use unshare --propagation private"
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        return "missing tools: %s" % ", ".join(missing)
    probe = tempfile.mkdtemp(prefix="mount-probe-")
    try:
        if System().run(["mount", "-t", "tmpfs", "probe", probe], check=False).returncode != 0:
            return "mounts do not work here"
        System().run(["umount", probe])
    finally:
        os.rmdir(probe)
    return None


SKIP_REASON = _why_skip()
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")]

# case id -> (build format, build options, format detect() must report)
CASES = {
    "directory": ("directory", {}, "directory"),
    "ext4": ("ext4", {}, "ext4"),
    "xfs": ("xfs", {}, "xfs"),
    "squashfs": ("squashfs", {}, "squashfs"),
    "rawdisk-gpt": ("rawdisk", {"table": "gpt"}, "rawdisk"),
    "rawdisk-dos": ("rawdisk", {"table": "dos"}, "rawdisk"),
    "qcow2-rawdisk": ("qcow2", {"inner": "rawdisk"}, "qcow2"),
    "qcow2-ext4": ("qcow2", {"inner": "ext4"}, "qcow2"),
    "tar": ("tar", {}, "tar"),
    "tar.gz": ("tar.gz", {}, "tar.gz"),
    "tar.zst": ("tar.zst", {}, "tar.zst"),
}


@pytest.fixture(scope="module")
def system():
    return System()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree") / "root"
    for d in ("etc", "boot", "usr/bin", "home/user", "var/empty"):
        (root / d).mkdir(parents=True)
    (root / "etc/image_id").write_text("id-1\n")
    (root / "boot/vmlinuz-1.0").write_bytes(b"\x7fKERNEL" * 1000)
    os.symlink("vmlinuz-1.0", root / "boot/vmlinuz")
    os.symlink("/etc/image_id", root / "image_id.abs")
    os.link(root / "etc/image_id", root / "etc/image_id.hardlink")
    (root / "usr/bin/su").write_bytes(b"#!/bin/true\n")
    os.chmod(root / "usr/bin/su", 0o4755)
    (root / "home/user/secret").write_text("s3cret\n")
    os.chown(root / "home/user/secret", 1234, 1234)
    os.chmod(root / "home/user/secret", 0o600)
    os.chmod(root, 0o755)
    os.chmod(root / "var/empty", 0o711)
    return str(root)


@pytest.fixture(scope="module")
def build(tree, system, tmp_path_factory):
    """build(fmt, **options) -> image path; each distinct image is built once."""
    out_dir = tmp_path_factory.mktemp("images")
    cache = {}

    def _build(fmt, **options):
        key = (fmt, tuple(sorted(options.items())))
        if key not in cache:
            out = str(out_dir / ("img%d.%s" % (len(cache), fmt)))
            cache[key] = imagebuild.build_image(tree, fmt, out, system, **options)
        return cache[key]
    return _build


@pytest.fixture
def work_dir(tmp_path):
    return str(tmp_path / "work")


def snapshot(root):
    """Everything that must survive packing: bytes, modes, owners, links."""
    entries, inodes = {}, {}
    st = os.lstat(root)
    entries["."] = (st.st_mode, st.st_uid, st.st_gid)
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root and "lost+found" in dirnames:  # ext4 adds it
            dirnames.remove("lost+found")
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            entry = (st.st_mode, st.st_uid, st.st_gid)
            if stat.S_ISLNK(st.st_mode):
                entry += (os.readlink(path),)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    entry += (f.read(), int(st.st_mtime))
                inodes.setdefault(st.st_ino, []).append(rel)
            entries[rel] = entry
    hardlinks = sorted(sorted(names) for names in inodes.values() if len(names) > 1)
    return entries, hardlinks


def assert_no_leak(system, image, work_dir):
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    assert not [m for m in mounts if m.startswith(work_dir)]
    assert system.run(["losetup", "--associated", image]).stdout.strip() == ""
    backing = system.run(["losetup", "--list", "--noheadings", "--output", "BACK-FILE"]).stdout
    assert work_dir not in backing
    assert not os.path.exists(work_dir) or os.listdir(work_dir) == []


@pytest.mark.parametrize("case", list(CASES))
def test_open_tree_matches_source(case, build, tree, system, work_dir):
    fmt, options, detected = CASES[case]
    image = build(fmt, **options)
    assert formats.detect(image) == detected
    with formats.open_tree(image, system, work_dir) as root:
        if fmt != "directory":
            assert root.startswith(work_dir + "/")
        assert snapshot(root) == snapshot(tree)
    assert_no_leak(system, image, work_dir)


@pytest.mark.parametrize("case", list(CASES))
def test_cleanup_when_body_raises(case, build, system, work_dir):
    fmt, options, _ = CASES[case]
    image = build(fmt, **options)
    with pytest.raises(RuntimeError, match="boom"):
        with formats.open_tree(image, system, work_dir) as root:
            assert os.path.isfile(os.path.join(root, "etc/image_id"))
            raise RuntimeError("boom")
    assert_no_leak(system, image, work_dir)


@pytest.mark.parametrize("options, expected_id", [
    ({"root_label": "cloudimg-rootfs", "decoy_mb": 64}, "id-1"),  # label beats a larger decoy
    ({"root_label": "img-rootfs", "decoy_mb": 64, "table": "dos"}, "id-1"),
    ({"decoy_mb": 4}, "id-1"),                                    # unlabelled: largest wins...
    ({"decoy_mb": 64, "table": "dos"}, "decoy"),                   # ...even when it comes first
    ({"decoy_mb": 4, "part_type": "root"}, "id-1"),               # GPT root type counts as Linux
], ids=["cloudimg-rootfs", "img-rootfs-mbr", "largest-gpt", "largest-is-first-mbr", "gpt-root-type"])
def test_rawdisk_root_partition_choice(options, expected_id, build, system, work_dir):
    image = build("rawdisk", **options)
    with formats.open_tree(image, system, work_dir) as root:
        with open(os.path.join(root, "etc/image_id")) as f:
            assert f.read().strip() == expected_id
    assert_no_leak(system, image, work_dir)


def assert_refused(system, image, work_dir, error, *words):
    with pytest.raises(error) as info:
        with formats.open_tree(image, system, work_dir):
            pytest.fail("opened a bad image")
    message = str(info.value)
    assert "\n" not in message and image in message
    for word in words:
        assert word in message
    assert_no_leak(system, image, work_dir)
    return message


def test_rawdisk_without_linux_partition(build, system, work_dir):
    image = build("rawdisk", part_type="data")
    assert_refused(system, image, work_dir, BadInput, "no Linux partition")


def test_garbage_file(tmp_path, system, work_dir):
    image = str(tmp_path / "image.qcow2")  # the name must not matter
    with open(image, "wb") as f:
        f.write(b"garbage!" * 8192)
    with pytest.raises(BadInput, match="unrecognised format"):
        formats.detect(image)
    assert_refused(system, image, work_dir, BadInput, "unrecognised format", "67 61 72 62")


def test_empty_file(tmp_path, system, work_dir):
    image = str(tmp_path / "empty.raw")
    open(image, "wb").close()
    assert_refused(system, image, work_dir, BadInput, "empty file")


def test_missing_file(tmp_path, system, work_dir):
    assert_refused(system, str(tmp_path / "nope"), work_dir, BadInput, "no such file")


def test_tiny_file_hints_truncation(tmp_path, system, work_dir):
    image = str(tmp_path / "tiny")
    with open(image, "wb") as f:
        f.write(b"\0" * 100)
    assert_refused(system, image, work_dir, BadInput, "truncated?")


@pytest.mark.parametrize("fmt, options, keep, error, words", [
    ("ext4", {}, None, BadInput, ["truncated ext4"]),
    ("xfs", {}, None, BadInput, ["truncated xfs"]),
    ("squashfs", {}, 512, BadInput, ["truncated squashfs"]),  # tiny: half would keep it all
    ("rawdisk", {"table": "dos"}, None, BadInput, ["truncated", "partition 2"]),
    ("rawdisk", {"table": "gpt"}, None, BadInput, ["GPT unreadable"]),  # backup header lost
    ("qcow2", {"inner": "rawdisk"}, None, BadInput, ["qcow2 is corrupt or truncated"]),
    ("tar.gz", {}, None, AgentError, ["cannot unpack tar.gz"]),
    ("tar.zst", {}, None, AgentError, ["cannot unpack tar.zst"]),
], ids=["ext4", "xfs", "squashfs", "rawdisk-dos", "rawdisk-gpt", "qcow2", "tar.gz", "tar.zst"])
def test_truncated_image(fmt, options, keep, error, words, build, tmp_path, system, work_dir):
    source = build(fmt, **options)
    image = str(tmp_path / "truncated")
    with open(source, "rb") as src, open(image, "wb") as dst:
        dst.write(src.read(keep or os.path.getsize(source) // 2))
    assert_refused(system, image, work_dir, error, *words)


def test_mount_failure_names_image_and_type(build, tmp_path, system, work_dir):
    source = build("ext4")
    image = str(tmp_path / "corrupt.ext4")
    with open(source, "rb") as src, open(image, "wb") as dst:
        dst.write(src.read(2048))  # a valid superblock over nothing at all
        dst.truncate(os.path.getsize(source))
    assert_refused(system, image, work_dir, AgentError, "cannot mount ext4")


def test_qcow2_with_backing_file_is_refused(build, tmp_path, system, work_dir):
    base = build("ext4")
    image = str(tmp_path / "overlay.qcow2")
    system.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base, image])
    assert_refused(system, image, work_dir, BadInput, "external file", base)


def test_qcow2_holding_a_qcow2_is_refused(build, tmp_path, system, work_dir):
    image = str(tmp_path / "nested.qcow2")
    system.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", build("qcow2", inner="ext4"), image])
    assert_refused(system, image, work_dir, BadInput, "qcow2 is not accepted here")


def test_tar_member_escaping_root_is_refused(tmp_path, system, work_dir):
    image = str(tmp_path / "evil.tar")
    payload = tmp_path / "payload"
    payload.write_text("escaped\n")
    with tarfile.open(image, "w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(str(payload), arcname="../escaped")
    assert_refused(system, image, work_dir, AgentError, "cannot unpack tar")


def test_a_truncated_tar_names_tars_error_not_the_warning_before_it(tmp_path, system, work_dir):
    # an unknown pax keyword makes GNU tar warn first; the truncation is the cause
    image = str(tmp_path / "warned.tar")
    with tarfile.open(image, "w", format=tarfile.PAX_FORMAT) as tar:
        member = tarfile.TarInfo("etc/motd")
        member.pax_headers = {"LIBARCHIVE.unknown": "1"}
        member.size = 100000
        tar.addfile(member, io.BytesIO(b"m" * member.size))
    with open(image, "r+b") as f:
        f.truncate(50000)
    message = assert_refused(system, image, work_dir, AgentError, "cannot unpack tar archive",
                             "Unexpected EOF in archive")
    assert "Ignoring unknown extended header keyword" not in message


def test_a_truncated_tar_gz_names_the_decompressors_error(build, tmp_path, system, work_dir):
    image = str(tmp_path / "cut.tar.gz")
    with open(build("tar.gz"), "rb") as src, open(image, "wb") as dst:
        dst.write(src.read(os.path.getsize(src.name) // 2))
    assert_refused(system, image, work_dir, AgentError, "cannot unpack tar.gz archive",
                   "unexpected end of file")
