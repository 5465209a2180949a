"""config.load: defaults, parsing, and errors that name the key and value."""

import pytest

from update_agent import config
from update_agent.config import Config
from update_agent.errors import BadInput


def load(tmp_path, body, section="[agent]\n"):
    path = tmp_path / "update-agent.conf"
    path.write_text(section + body)
    return config.load(str(path))


def test_missing_file_means_defaults(tmp_path):
    assert config.load(str(tmp_path / "absent.conf")) == Config()
    assert config.load(None) == Config()
    assert Config().preserved == config.DEFAULT_PRESERVE


def test_values_are_parsed(tmp_path):
    c = load(tmp_path, "image_url_template = https://img/{image_id}.qcow2\n"
                       "require_digest = no\nhook_timeout = 60\n"
                       "preserve_extra = /srv/data, /opt/app/state\n  /var/lib/db\n")
    assert c.image_url_template == "https://img/{image_id}.qcow2"
    assert c.require_digest is False
    assert c.hook_timeout == 60
    assert c.preserve_extra == ("/srv/data", "/opt/app/state", "/var/lib/db")
    assert c.preserved[-1] == "/var/lib/db"
    assert c.source.endswith("update-agent.conf")


@pytest.mark.parametrize("text,expected", [
    ("20G", 20 << 30), ("512M", 512 << 20), ("1T", 1 << 40), ("4 KiB", 4096), ("100", 100),
    ("2gb", 2 << 30),
])
def test_sizes(tmp_path, text, expected):
    assert load(tmp_path, "max_image_size = %s\n" % text).max_image_size == expected


@pytest.mark.parametrize("text,expected", [
    ("true", True), ("Yes", True), ("on", True), ("1", True),
    ("false", False), ("NO", False), ("off", False), ("0", False),
])
def test_booleans(tmp_path, text, expected):
    assert load(tmp_path, "require_digest = %s\n" % text).require_digest is expected


@pytest.mark.parametrize("body,words", [
    ("colour = blue\n", ["'colour'"]),
    ("require_digest = maybe\n", ["require_digest", "'maybe'"]),
    ("max_image_size = 1.5G\n", ["max_image_size", "'1.5G'"]),
    ("hook_timeout = -1\n", ["hook_timeout", "'-1'"]),
    ("preserve_extra = /srv/ok, srv/relative\n", ["preserve_extra", "'srv/relative'"]),
    ("preserve = /etc/../root\n", ["preserve", "'/etc/../root'"]),
    ("image_url_template = https://img/latest.qcow2\n",
     ["image_url_template", "'https://img/latest.qcow2'", "{image_id}"]),
])
def test_bad_values_name_key_and_value(tmp_path, body, words):
    with pytest.raises(BadInput) as err:
        load(tmp_path, body)
    for word in words:
        assert word in str(err.value)


def test_unknown_section_is_refused(tmp_path):
    with pytest.raises(BadInput, match=r"\[agnet\]"):
        load(tmp_path, "require_digest = no\n", section="[agnet]\n")


def test_default_section_is_not_silently_ignored(tmp_path):
    with pytest.raises(BadInput):
        load(tmp_path, "image_url_template = https://img/latest.qcow2\n", section="[DEFAULT]\n")
