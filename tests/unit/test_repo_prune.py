"""What a prune retires and removes: never a file a kept image, or one retired within
the grace period, still names; orphans only once they are older than the grace."""

from update_agent.decide.repo_prune import decide

GRACE = 100
NOW = 10_000


def _present(*paths, mtime=0):
    return {p: mtime for p in paths}


def test_keeps_the_newest_n_and_retires_the_rest_without_removing_their_files():
    live = {"a": 1.0, "b": 2.0, "c": 3.0}
    refs = {"a": {"pa", "shared"}, "b": {"pb", "shared"}, "c": {"pc", "shared"}}
    got = decide(live, {}, refs, _present("pa", "pb", "pc", "shared"), 2, GRACE, NOW)
    assert got.retire == ["a"]
    assert got.expire == []
    assert got.delete == []  # a node may be fetching a's files right now


def test_files_go_once_their_image_has_been_retired_for_the_grace_period():
    refs = {"a": {"pa", "shared"}, "c": {"pc", "shared"}}
    present = _present("pa", "pc", "shared")
    within = decide({"c": 3.0}, {"a": NOW - GRACE + 1}, refs, present, 1, GRACE, NOW)
    assert (within.expire, within.delete) == ([], [])
    after = decide({"c": 3.0}, {"a": NOW - GRACE}, refs, present, 1, GRACE, NOW)
    assert after.expire == ["a"]
    assert after.delete == ["pa"]  # "shared" is still c's


def test_an_orphan_goes_only_when_older_than_the_grace_period():
    # a publish under way has written its files but not yet its record
    present = {"old-orphan": NOW - GRACE - 1, "new-orphan": NOW - 5, "pc": 0}
    got = decide({"c": 3.0}, {}, {"c": {"pc"}}, present, 1, GRACE, NOW)
    assert got.delete == ["old-orphan"]


def test_an_image_published_again_after_retiring_is_kept():
    got = decide({"a": 5.0}, {"a": 0}, {"a": {"pa"}}, _present("pa"), 1, GRACE, NOW)
    assert (got.retire, got.expire, got.delete) == ([], [], [])


def test_ties_in_publish_time_are_broken_by_id_so_a_prune_is_repeatable():
    got = decide({"a": 1.0, "b": 1.0}, {}, {}, {}, 1, GRACE, NOW)
    assert got.retire == ["a"]
