"""sync.write_list: names rsync's --files-from would take as comments."""

from update_agent.apply import sync


def test_names_that_begin_like_a_comment_are_written_as_dot_slash(tmp_path):
    path = tmp_path / "list"
    sync.write_list(str(path), ["#notes", ";semi", "#dir/x", "etc/#not-first", "etc/motd"])
    assert path.read_bytes() == b"./#notes\0./;semi\0./#dir/x\0etc/#not-first\0etc/motd\0"
