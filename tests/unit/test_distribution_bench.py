"""The distribution benchmark's own judgement (tools/distribution_bench.py): which run
stands for a method, and the goal lines it reports. The benchmark itself is not a test."""

import distribution_bench as db

R = db.Result
FACTS = {"lower_each": 1_000_000, "lower_tar": 800_000, "changed": 1500, "image_bytes": 3_000_000_000,
         "whole_image_bytes": 1_000_000_000, "manifest_bytes": 6_000_000, "index_bytes": 4_000_000,
         "xattrs_bytes": 0, "delta_bytes": 30_000, "rsync_s": 3.0}


def results(objects, ostree_wall=20.0):
    return [objects, R("update-agent whole image", 1_000_000_000, 1, 100.0, 60, "content equals B"),
            R("ostree pull + checkout", 20_000_000, 3000, ostree_wall, 30, "content equals B"),
            R("casync extract (seed A)", error="casync exited 1: no store"),
            R("zsync (fetch + apply)", 90_000_000, 400, 40.0, 10, "content equals B")]


def line(lines, word):
    return next(x for x in lines if word in x)


def test_objects_within_every_goal_is_met_on_each_line():
    ok = R("update-agent objects", 7_000_000, 6, 2.5, 120, "content equals B", parts={"its sync step": 0.8})
    lines = db.goal_lines("w", results(ok), FACTS, full_scale=True)
    for word in ("manifest:", "bytes:", "requests:", "memory:", "update time:", "apply "):
        assert line(lines, word).endswith(": met"), line(lines, word)


def test_the_bytes_goal_allows_the_manifest_alone_beside_the_changed_files():
    # 1.1 x 1 MB + the 6 MB manifest = 7.1 MB; the 4 MB index is not allowed for
    over = R("update-agent objects", 7_200_000, 6, 2.5, 120, "content equals B")
    assert "= 7.10 MB: MISSED" in line(db.goal_lines("w", results(over), FACTS, full_scale=True), "bytes:")


def test_each_missed_goal_says_why():
    bad = R("update-agent objects", 12_000_000, 50, 30.0, 300, "WRONG: content differs")
    lines = db.goal_lines("w", results(bad, ostree_wall=20.0), FACTS, full_scale=True)
    assert "MISSED" in line(lines, "bytes:")          # 12 MB > 1.1 x 1 MB + 6 MB
    assert "MISSED" in line(lines, "requests:")       # 50 requests for 11.4 MiB
    assert "MISSED" in line(lines, "memory:")
    assert "ostree pull + checkout took 20.00 s" in line(lines, "update time:")
    assert "0.30 x the whole image" in line(lines, "update time:")
    assert line(lines, "apply ").endswith("MISSED") and "content WRONG" in line(lines, "apply ")


def test_an_unavailable_client_is_one_line_and_not_judged():
    gone = R("update-agent objects", error="no image URL for image_id 'img-B'")
    lines = db.goal_lines("w", results(gone), FACTS, full_scale=True)
    assert len(lines) == 2
    assert "not available (no image URL for image_id 'img-B')" in lines[1]
    assert lines[0].endswith(": met")  # the manifest is judged from the repository alone


def test_the_apply_goal_is_for_150000_files_only():
    ok = R("update-agent objects", 11_000_000, 10, 2.5, 120, "content equals B")
    assert "not judged" in line(db.goal_lines("w", results(ok), FACTS, full_scale=False), "apply ")


def test_a_method_is_its_median_run_unless_one_run_failed():
    runs = [R("m", wall=3.0), R("m", wall=1.0), R("m", wall=2.0)]
    assert db._median(runs).wall == 2.0
    assert db._median(runs + [R("m", error="boom")]).error == "boom"


def test_the_report_has_a_row_per_method_and_the_lower_bound():
    class Bench:
        distribution = [("w", results(R("update-agent objects", error="no client")), FACTS)]
    rows = db.report_lines(Bench())
    assert "| w | update-agent objects | - | - | - | - | not available: no client |" in rows
    assert any(r.startswith("| w | lower bound") and "1.000" in r for r in rows)
    assert any(r.startswith("| w | ostree pull + checkout | 20.000 | 3000 | 20.000 | 30 |") for r in rows)
    assert any(r.startswith("| w | sizes") and "delta index 30.0 KB" in r for r in rows)
