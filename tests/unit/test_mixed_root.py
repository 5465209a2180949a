"""journal.mixed_root: what status and the history say of a root between sync and commit."""

from update_agent.apply import inplace
from update_agent.state import journal


def j(steps, status="failed", failed_step="", error=""):
    return journal.Journal(image_id="img-B", digest="", previous_image_id="img-A",
                           previous_digest="", action="in-place", root_was_ro=True, started_at=0.0,
                           steps=dict({s: "pending" for s in inplace.STEPS}, **steps),
                           status=status, failed_step=failed_step, error=error)


def test_a_failed_sync_is_mixed_and_names_the_step_and_the_error():
    text = journal.mixed_root(j({"sync": "started"}, failed_step="sync", error="rsync: ENOSPC"))
    assert text == "mixed: holds part of image img-B over img-A; step sync failed: rsync: ENOSPC"


def test_a_failed_verify_is_mixed():
    text = journal.mixed_root(j({"sync": "done", "verify": "started"}, failed_step="verify",
                               error="1 paths do not match"))
    assert text.endswith("step verify failed: 1 paths do not match")


def test_a_killed_sync_is_mixed_and_says_where_it_stopped():
    before = {"pre-configure": "done", "remount-rw": "done", "pin": "done"}
    text = journal.mixed_root(j(dict(before, sync="started"), status="running"))
    assert text == "mixed: holds part of image img-B over img-A; stopped at step sync"


def test_before_the_sync_or_after_the_commit_the_root_is_not_mixed():
    assert journal.mixed_root(j({"pre-configure": "started"}, failed_step="pre-configure")) == ""
    assert journal.mixed_root(j({"sync": "done", "verify": "done", "commit": "done",
                                "configure": "started"}, failed_step="configure")) == ""
    assert journal.mixed_root(j({"sync": "done", "commit": "done"}, status="done")) == ""
