"""The object repository's names, pack planning and index, as a client reads them back."""

import hashlib

import pytest

from update_agent.cli import main as cli
from update_agent.decide import repo_format as fmt
from update_agent.decide.entries import Entry
from update_agent.errors import BadInput

H1, H2, H3 = (hashlib.sha256(b).hexdigest() for b in (b"1", b"2", b"3"))


def test_names_are_the_sha256_of_the_content_under_a_two_char_fan_out():
    assert fmt.object_path(H1) == "objects/%s/%s.zst" % (H1[:2], H1)
    assert fmt.pack_path(H2) == "packs/%s/%s.pack" % (H2[:2], H2)
    assert fmt.manifest_path(fmt.hex_of("sha256:" + H3)) == "manifests/%s.zst" % H3


@pytest.mark.parametrize("bad", ["sha256:xyz", "md5:" + H1, H1[:-1], H1.upper()])
def test_hex_of_refuses_what_is_not_a_sha256(bad):
    with pytest.raises(ValueError):
        fmt.hex_of(bad)


def test_packs_close_at_the_target_and_keep_manifest_order():
    small = [("a", 600), ("b", 300), ("c", 200), ("d", 900), ("e", 50)]
    assert fmt.plan_packs(small, target=1000) == [["a", "b"], ["c"], ["d", "e"]]


def test_one_file_bigger_than_the_target_still_gets_a_pack_of_its_own():
    assert fmt.plan_packs([("a", 10), ("b", 5000), ("c", 10)], target=100) == [["a"], ["b"], ["c"]]
    assert fmt.plan_packs([], target=100) == []


def test_stored_files_are_each_content_once_without_empty_files_links_or_dirs():
    entries = {
        "etc": Entry("d", 0o755, 0, 0, 0, "", "", ""),
        "etc/a": Entry("f", 0o644, 0, 0, 5, H1, "", ""),
        "etc/copy-of-a": Entry("f", 0o644, 0, 0, 5, H1, "", ""),
        "etc/empty": Entry("f", 0o644, 0, 0, 0, fmt_empty(), "", ""),
        "etc/link": Entry("l", 0o777, 0, 0, 0, H2, "", ""),  # a target that looks like a digest
        "usr/big": Entry("f", 0o755, 0, 0, fmt.SMALL, H3, "", ""),
    }
    assert fmt.stored_files(entries) == {H1: 5, H3: fmt.SMALL}
    assert fmt.is_small(5) and not fmt.is_small(fmt.SMALL) and not fmt.is_small(0)


def fmt_empty():
    return hashlib.sha256(b"").hexdigest()


def test_index_reads_back_what_was_written():
    locations = {H1: (fmt.pack_path(H3), 0, 20), H2: (fmt.pack_path(H3), 20, 31),
                 H3: (fmt.object_path(H3), 0, 70000)}
    text = fmt.index_dumps(locations)
    assert text.splitlines()[0] == fmt.INDEX_LINE
    assert fmt.index_loads(text) == locations


@pytest.mark.parametrize("line", [
    "%s\t../../etc/passwd\t0\t10" % H1,           # a path outside the content directories
    "%s\tpacks/xx/%s.pack\t0\t10" % (H1, H2),      # not a name the format makes
    "%s\t%s\tzero\t10" % (H1, fmt.pack_path(H2)),  # offset not a number
    "nothex\t%s\t0\t10" % fmt.pack_path(H2),
])
def test_index_refuses_a_line_a_client_must_not_follow(line):
    with pytest.raises(ValueError):
        fmt.index_loads(fmt.INDEX_LINE + "\n" + line + "\n")


def test_xattr_values_round_trip_including_binary():
    values = {"usr/bin/ping": {"security.capability": b"\x01\x00\x00\x02\x00 \x00\x00"}}
    assert fmt.xattrs_loads(fmt.xattrs_dumps(values)) == values


def test_record_names_its_metadata_files():
    rec = fmt.record("img-a", "sha256:" + H1, "sha256:" + H2, None, 5.0, 10, "c2ln")
    back = fmt.record_loads(fmt.record_dumps(rec), "images/img-a.json")
    assert back["signature"] == "c2ln"
    assert fmt.metadata_paths(back) == [fmt.manifest_path(H1), fmt.index_path(H2)]


def test_a_record_that_is_not_one_is_refused_naming_the_file():
    with pytest.raises(BadInput, match="images/x.json.*'manifest'"):
        fmt.record_loads('{"format": 1, "manifest": "md5:1", "index": "sha256:%s"}' % H1,
                         "images/x.json")


@pytest.mark.parametrize("argv, words", [
    (["publish", "/nonexistent-image", "/tmp/r"], "/nonexistent-image: no such file"),
    (["publish", "only-one"], "needs IMAGE and REPO"),
    (["publish", "--prune", "/tmp/r"], "--keep N"),
    (["publish", "--prune", "--keep", "0", "/tmp/r"], "got 0"),
    (["publish", "--prune", "--keep", "2", "--grace", "-1", "/tmp/r"], "--grace -1"),
    (["publish", "--keep", "2", "a", "b"], "--keep 2 goes with --prune"),
    (["publish", "--keep", "two", "/tmp/r"], "'two'"),
    (["publish", "a", "b", "--key", "/nonexistent.pem"], "--key /nonexistent.pem"),
])
def test_bad_publish_arguments_are_one_line_naming_the_value(argv, words, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_delta_index_locates_what_the_previous_image_lacks_and_the_contents_asked_always():
    locations = {H1: ("packs/p", 0, 10), H2: ("packs/p", 10, 10), H3: ("objects/o", 0, 99)}
    assert fmt.delta_locations(locations, {H1, H2}) == {H3: ("objects/o", 0, 99)}
    # an account file's content, which every node needs for the merge, whatever it runs
    assert fmt.delta_locations(locations, {H1, H2}, always=[H1]) == {
        H1: ("packs/p", 0, 10), H3: ("objects/o", 0, 99)}
