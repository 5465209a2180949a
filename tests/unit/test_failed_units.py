"""The units failed before an update, which the health check after it discounts."""

from update_agent.apply import inplace as applying, health
from update_agent.state import journal
from update_agent.state.store import Store


def _journal():
    return journal.Journal(image_id="img-2", digest="", previous_image_id="img-1", previous_digest="",
                           action="in-place", root_was_ro=True, started_at=0.0,
                           steps={s: "pending" for s in applying.STEPS})


def test_a_resumed_update_keeps_the_failed_units_its_first_attempt_saw(monkeypatch, tmp_path):
    # a crash after pre-configure stopped a service may leave it failed: the resumed
    # update must still count it against the update, not as failed before it
    seen = iter([{"old.service"}, {"old.service", "stopped-by-the-update.service"}])
    monkeypatch.setattr(health, "failed_units", lambda system, paths: next(seen))
    executor = applying.Executor(None, None, None, None, None)
    j = _journal()
    executor._note_failed_units(j)
    j.steps["pre-configure"] = "done"
    executor._note_failed_units(j)
    assert j.failed_units == ["old.service"]
    store = Store(str(tmp_path))
    store.journal.save(j)
    executor.journal = store.journal.load()  # as a restarted agent finds it
    assert executor.failed_before() == {"old.service"}


def test_a_journal_that_never_noted_them_notes_them_on_resume(monkeypatch):
    # a journal written before this was recorded: the best there is, the units now
    monkeypatch.setattr(health, "failed_units", lambda system, paths: {"x.service"})
    j = _journal()
    j.steps["pre-configure"] = "done"
    applying.Executor(None, None, None, None, None)._note_failed_units(j)
    assert j.failed_units == ["x.service"]


def test_without_systemd_there_is_nothing_to_compare(monkeypatch):
    monkeypatch.setattr(health, "failed_units", lambda system, paths: None)
    executor = applying.Executor(None, None, None, None, None)
    executor.journal = _journal()
    executor._note_failed_units(executor.journal)
    assert executor.failed_before() is None
