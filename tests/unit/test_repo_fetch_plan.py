"""Which contents a node fetches from a repository, and in which requests."""

import hashlib

from update_agent.decide import repo_fetch
from update_agent.decide.entries import Entry

H = [hashlib.sha256(b"%d" % i).hexdigest() for i in range(8)]
PACK = "packs/aa/%s.pack" % ("a" * 64)
OBJ = "objects/bb/%s.zst" % H[7]


def f(digest, size):
    return Entry("f", 0o100644, 0, 0, size, digest, "", "", 0)


def test_wanted_counts_each_content_once_and_needs_nothing_for_empty_files_or_links():
    entries = {"a": f(H[0], 10), "copy": f(H[0], 10), "empty": f("e3b0", 0),
               "link": Entry("l", 0o120777, 0, 0, 3, "a", "", "", 0), "b": f(H[1], 5)}
    assert repo_fetch.wanted(["a", "copy", "empty", "link", "b", "gone"], entries) == \
        {H[0]: 10, H[1]: 5}


def test_contents_the_node_has_are_not_fetched():
    locations = {H[0]: (PACK, 0, 100), H[1]: (PACK, 100, 100)}
    plan = repo_fetch.plan({H[0]: 300, H[1]: 300}, {H[0]}, locations)
    assert [(r.path, r.span) for r in plan.requests] == [(PACK, (100, 100))]
    assert (plan.local, plan.bytes, plan.contents) == (1, 100, 1)


def test_neighbouring_members_share_one_range_and_distant_ones_do_not():
    gap = repo_fetch.MERGE_GAP
    locations = {H[0]: (PACK, 0, 100), H[1]: (PACK, 100 + gap, 100),  # within the gap
                 H[2]: (PACK, 200 + 3 * gap, 50)}                    # too far
    plan = repo_fetch.plan({H[0]: 1, H[1]: 1, H[2]: 1}, set(), locations)
    assert [r.span for r in plan.requests] == [(0, 200 + gap), (200 + 3 * gap, 50)]
    assert [len(r.members) for r in plan.requests] == [2, 1]
    # the bytes between merged members are fetched too, and counted
    assert plan.bytes == 200 + gap + 50


def test_an_object_is_fetched_whole_and_counted_by_its_length():
    plan = repo_fetch.plan({H[7]: 1 << 20}, set(), {H[7]: (OBJ, 0, 5000)})
    (r,) = plan.requests
    assert (r.path, r.span, r.bytes) == (OBJ, None, 5000)


def test_a_content_no_index_line_locates_is_missing_not_silently_dropped():
    plan = repo_fetch.plan({H[0]: 1, H[3]: 1}, set(), {H[0]: (PACK, 0, 10)})
    assert plan.missing == (H[3],)
    assert plan.to_dict() == {"bytes": 10, "requests": 1, "contents": 1, "local": 0, "missing": 1}


def test_members_come_in_offset_order_whatever_the_digests_order():
    locations = {H[0]: (PACK, 500, 10), H[1]: (PACK, 0, 10), H[2]: (PACK, 200, 10)}
    (r,) = repo_fetch.plan({h: 1 for h in locations}, set(), locations).requests
    assert [m.offset for m in r.members] == [0, 200, 500]
    assert r.span == (0, 510)
