"""A tar archive read from its headers (how a user without root publishes one)."""

import io
import tarfile

import pytest

from update_agent.errors import BadInput
from update_agent.repo import tarball


def _archive(path, members):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _file(name, data, **kw):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in kw.items():
        setattr(info, k, v)
    return info, data


def test_owners_modes_hard_links_xattrs_and_nanoseconds_come_from_the_headers(tmp_path):
    big = _file("./usr/bin/tool", b"x" * 10, uid=1234, gid=99, mode=0o4755,
                pax_headers={"mtime": "1700000000.123456789", "SCHILY.xattr.user.a": "v"})
    link = tarfile.TarInfo("./usr/bin/alias")
    link.type, link.linkname = tarfile.LNKTYPE, "./usr/bin/tool"
    _archive(str(tmp_path / "a.tar"), [big, (link, None)])
    (tmp_path / "s").mkdir()
    got = tarball.read(str(tmp_path / "a.tar"), "tar", None, str(tmp_path / "s"))
    tool = got.entries["usr/bin/tool"]
    assert (tool.uid, tool.gid, tool.mode, tool.mtime) == (1234, 99, 0o4755, 1700000000123456789)
    assert tool.link == got.entries["usr/bin/alias"].link == "usr/bin/alias"
    assert got.xattrs["usr/bin/tool"] == {"user.a": b"v"} and tool.xattrs
    with open(str(tmp_path / "s" / "content" / got.rel_of[tool.digest]), "rb") as f:
        assert f.read() == b"x" * 10


@pytest.mark.parametrize("name", ["../etc/passwd", "a/../../b", "a/.."])
def test_a_member_outside_the_root_is_refused_naming_it(tmp_path, name):
    _archive(str(tmp_path / "a.tar"), [_file(name, b"x")])
    (tmp_path / "s").mkdir()
    with pytest.raises(BadInput, match="leaves the image's root"):
        tarball.read(str(tmp_path / "a.tar"), "tar", None, str(tmp_path / "s"))


def test_a_leading_slash_is_dropped_as_gnu_tar_does(tmp_path):
    _archive(str(tmp_path / "a.tar"), [_file("/etc/motd", b"hi")])
    (tmp_path / "s").mkdir()
    assert list(tarball.read(str(tmp_path / "a.tar"), "tar", None, str(tmp_path / "s")).entries) == ["etc/motd"]
