"""A work dir that cannot take a new directory is named in one line, not a traceback."""

import pytest

from update_agent.errors import AgentError
from update_agent.images.formats import loop


def test_a_work_dir_that_cannot_hold_a_mount_point_is_named(tmp_path):
    blocker = tmp_path / "work"
    blocker.write_text("a file where the work dir should be")
    with pytest.raises(AgentError, match="cannot make a directory in the work dir %s" % blocker):
        with loop.temp_dir(str(blocker), "mnt-"):
            pytest.fail("no directory can be made below a file")
