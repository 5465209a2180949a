"""A failed unpack names tar's real error, not a warning printed before it."""

import pytest

from update_agent.images.formats.tarball import failure_cause

CASES = [
    ("a warning first", "tar: Ignoring unknown extended header keyword 'LIBARCHIVE.x'\n"
     "tar: Unexpected EOF in archive\ntar: rmtlseek not stopped at a record boundary\n"
     "tar: Error is not recoverable: exiting now\n", "tar: Unexpected EOF in archive"),
    ("the decompressor's error", "\ngzip: stdin: unexpected end of file\n"
     "tar: Unexpected EOF in archive\ntar: Error is not recoverable: exiting now\n",
     "gzip: stdin: unexpected end of file"),
    ("a time stamp warning first", "tar: ./a: time stamp 2090-01-01 is 2e9 s in the future\n"
     "tar: ./b: Cannot write: No space left on device\n"
     "tar: Exiting with failure status due to previous errors\n",
     "tar: ./b: Cannot write: No space left on device"),
    ("only the closing line", "tar: Exiting with failure status due to previous errors\n",
     "tar: Exiting with failure status due to previous errors"),
    ("nothing said", "", "tar failed without saying why"),
]


@pytest.mark.parametrize("name, stderr, cause", CASES, ids=[c[0] for c in CASES])
def test_the_cause_is_the_first_line_that_is_no_warning(name, stderr, cause):
    assert failure_cause(stderr) == cause
