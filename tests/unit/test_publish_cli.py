"""`update-agent publish`'s own bad input: one line naming the option and its value,
exit 2, before anything is read or written."""

import io

import pytest

from update_agent.cli import publish
from update_agent.errors import BadInput


def test_a_bad_image_id_names_the_option_and_the_value(tmp_path):
    with pytest.raises(BadInput) as e:
        publish.main([str(tmp_path / "image"), str(tmp_path / "repo"), "--image-id", "a b"],
                     io.StringIO())
    assert str(e.value).startswith("option '--image-id' has invalid value 'a b'")
    assert e.value.exit_code == 2
    assert not (tmp_path / "repo").exists()


def test_keep_without_prune_is_refused(tmp_path):
    with pytest.raises(BadInput, match="--keep 3 goes with --prune"):
        publish.main([str(tmp_path / "image"), str(tmp_path / "repo"), "--keep", "3"],
                     io.StringIO())
