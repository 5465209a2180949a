"""A partial rsync (exit 23, 24) fails the sync step with rsync's first complaint."""

import types

import pytest

from fakes import Answer, FakeSystem
from update_agent.apply import sync
from update_agent.errors import AgentError


@pytest.mark.parametrize("code, complaint", [
    (23, 'rsync: [receiver] write failed on "/r/usr/bin/app": No space left on device (28)'),
    (24, 'file has vanished: "/img/usr/share/x"'),
])
def test_a_partial_transfer_fails_the_sync(tmp_path, code, complaint):
    system = FakeSystem({"rsync": Answer(code, "usr/bin/app\n", complaint + "\nrsync error: some "
                                         "files could not be transferred (code %d)\n" % code)})
    changes = types.SimpleNamespace(transfer=("usr/bin/app",), deleted_top=("usr/old",))
    plan = types.SimpleNamespace(accounts=(), changes=changes)
    (tmp_path / "root" / "usr" / "old").mkdir(parents=True)
    with pytest.raises(AgentError) as e:
        sync.sync(system, plan, str(tmp_path / "image"), {}, str(tmp_path / "root"), (),
                  str(tmp_path / "work"))
    assert "(exit %d): %s" % (code, complaint.split("\n")[0]) in str(e.value)
    assert (tmp_path / "root" / "usr" / "old").exists(), "nothing deleted after a failed copy"
