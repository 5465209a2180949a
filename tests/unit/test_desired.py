"""desired.from_metadata: untrusted metadata in, a validated Desired out."""

import hashlib
import logging

import pytest

from update_agent import config
from update_agent.sources.desired import Desired, from_metadata
from update_agent.errors import BadInput

SHA = hashlib.sha256(b"img").hexdigest()


def test_valid_metadata():
    d = from_metadata({"image_id": "img-2024.1_rc:1+x",
                       "update_agent": {"image_url": "https://img/a.qcow2",
                                        "image_digest": "sha256:" + SHA.upper(),
                                        "reboot": "never"}})
    assert d == Desired("img-2024.1_rc:1+x", "https://img/a.qcow2", "sha256:" + SHA, "never")


def test_defaults_when_options_absent():
    d = from_metadata({"image_id": "a", "update_agent": {"image_url": "file:///img/a.raw"}})
    assert (d.image_digest, d.reboot) == ("", ""), "unset: the config's reboot policy applies"


@pytest.mark.parametrize("opts", [None, {}, {"image_url": ""}, {"image_url": None}])
def test_template_is_used_when_no_url(opts):
    md = {"image_id": "img-7"}
    if opts is not None:
        md["update_agent"] = opts
    assert from_metadata(md, "https://img/{image_id}.qcow2").image_url == "https://img/img-7.qcow2"


def test_metadata_url_wins_over_template():
    md = {"image_id": "a", "update_agent": {"image_url": "https://other/a"}}
    assert from_metadata(md, "https://img/{image_id}").image_url == "https://other/a"


def test_no_url_and_no_template_is_refused():
    with pytest.raises(BadInput, match="'img-7'.*image_url_template"):
        from_metadata({"image_id": "img-7"})


def md(**opts):
    return {"image_id": "img-1", "update_agent": opts}


@pytest.mark.parametrize("metadata,template,words", [
    ({}, "", ["'image_id'", "missing"]),
    ({"image_id": 42}, "", ["'image_id'", "42"]),
    ({"image_id": "../etc"}, "", ["'image_id'", "'../etc'"]),
    ({"image_id": "a..b"}, "", ["'image_id'", "'a..b'"]),
    ({"image_id": "has space"}, "", ["'image_id'", "'has space'"]),
    ({"image_id": "-x"}, "", ["'image_id'", "'-x'"]),
    ({"image_id": "x" * 256}, "", ["'image_id'", "'xxxx"]),
    ({"image_id": "a", "update_agent": "yes"}, "", ["'update_agent'", "'yes'"]),
    (md(image_url="ftp://img/a"), "", ["'update_agent.image_url'", "'ftp://img/a'"]),
    (md(image_url="https://img/a b"), "", ["'update_agent.image_url'", "'https://img/a b'"]),
    (md(image_url=5), "", ["'update_agent.image_url'", "5"]),
    (md(image_url="https://a", image_digest="md5:abc"), "",
     ["'update_agent.image_digest'", "'md5:abc'"]),
    (md(image_url="https://a", reboot="sometimes"), "", ["'update_agent.reboot'", "'sometimes'"]),
    (md(image_url="https://a", reboot=True), "", ["'update_agent.reboot'", "True"]),
    ({"image_id": "a"}, "gopher://img/{image_id}", ["'image_url_template'", "'gopher://img/a'"]),
])
def test_invalid_values_name_key_and_value(metadata, template, words):
    with pytest.raises(BadInput) as err:
        from_metadata(metadata, template)
    for word in words:
        assert word in str(err.value)


def test_non_dict_metadata_is_refused():
    with pytest.raises(BadInput, match="list"):
        from_metadata(["image_id"])


@pytest.mark.parametrize("metadata", [
    {"image_id": "x" * 10000},
    md(image_url="https://img/" + "a" * 10000),
])
def test_huge_values_are_shown_truncated(metadata):
    with pytest.raises(BadInput) as err:
        from_metadata(metadata)
    msg = str(err.value)
    assert len(msg) < 400
    assert "chars)" in msg


def test_unknown_update_agent_keys_only_warn(caplog):
    with caplog.at_level(logging.WARNING):
        d = from_metadata(md(image_url="https://a", colour="blue"))
    assert d.image_url == "https://a"
    assert "update_agent.colour" in caplog.text


def test_image_id_with_trailing_newline_is_refused():
    with pytest.raises(BadInput):
        from_metadata({"image_id": "img-1\n", "update_agent": {"image_url": "https://img/a"}})


def test_template_with_unknown_placeholder_is_bad_input(tmp_path):
    path = tmp_path / "c.conf"
    path.write_text("[agent]\nimage_url_template = https://img/{image_id}/{arch}.qcow2\n")
    with pytest.raises(BadInput):
        template = config.load(str(path)).image_url_template
        from_metadata({"image_id": "a"}, template)


def test_an_image_id_at_the_length_limit_is_accepted():
    from update_agent.sources.desired import MAX_IMAGE_ID
    image_id = "i" * MAX_IMAGE_ID
    assert from_metadata(md(image_url="https://a") | {"image_id": image_id}).image_id == image_id


@pytest.mark.parametrize("length", [201, 228, 250, 255])
def test_an_image_id_too_long_for_the_file_names_made_from_it_is_refused(length):
    # the change list's temporary file is named from it: 27 more bytes, 255 at most
    with pytest.raises(BadInput) as err:
        from_metadata(md(image_url="https://a") | {"image_id": "i" * length})
    msg = str(err.value)
    assert "'image_id'" in msg and "%d chars" % length in msg and "limit is 200" in msg
    assert len(msg) < 200 and "\n" not in msg


def test_the_longest_name_made_from_an_image_id_fits_the_filesystem():
    from update_agent.sources.desired import MAX_IMAGE_ID
    change_list = "%d-%s.json" % (99999999999, "i" * MAX_IMAGE_ID)   # journal.save_change_list
    temporary = "." + change_list + "." + "x" * 8                     # statefile.write_atomic
    assert len(temporary.encode()) <= 255


def test_a_repository_needs_no_image_url_and_keeps_the_manifest_digest():
    d = from_metadata({"image_id": "img-2", "update_agent": {
        "repo": "https://repo.example/r/", "image_digest": "sha256:" + SHA}})
    assert (d.repo, d.image_url, d.image_digest) == ("https://repo.example/r/", "", "sha256:" + SHA)


@pytest.mark.parametrize("bad", ["file:///srv/repo", "ftp://h/r", "http://", 7, "http://h/ r"])
def test_a_repository_url_that_is_not_http_is_refused_naming_the_key(bad):
    with pytest.raises(BadInput, match="update_agent.repo"):
        from_metadata({"image_id": "a", "update_agent": {"repo": bad}})
