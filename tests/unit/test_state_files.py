"""Metadata nested past the limit is refused as bad input, never RecursionError."""

import pytest

from update_agent.errors import BadInput
from update_agent import nesting
from update_agent.sources import metadata_files


def _nested(levels):
    return "[" * levels + "]" * levels


def test_depth_is_counted_without_recursion():
    assert nesting.depth({"a": [1, {"b": 2}]}) == 3
    assert nesting.depth(7) == 0


def test_a_document_deeper_than_the_parser_can_go_names_its_file(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"a": %s}' % _nested(100000))
    with pytest.raises(BadInput, match="deep.json: metadata nests deeper than 64"):
        metadata_files.read([str(path)])


def test_a_document_past_the_limit_names_its_file(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"a": %s}' % _nested(nesting.MAX_DEPTH))
    with pytest.raises(BadInput, match="deep.json: metadata nests deeper than 64"):
        metadata_files.read([str(path)])


def test_a_document_at_the_limit_is_read(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text('{"a": %s}' % _nested(nesting.MAX_DEPTH - 1))
    assert "a" in metadata_files.read([str(path)])
