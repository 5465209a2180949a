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
    assert Config().agent.preserved == config.DEFAULT_PRESERVE


def test_values_are_parsed(tmp_path):
    c = load(tmp_path, "image_url_template = https://img/{image_id}.qcow2\n"
                       "require_digest = no\nhook_timeout = 60\n"
                       "preserve_extra = /srv/data, /opt/app/state\n  /var/lib/db\n")
    assert c.agent.image_url_template == "https://img/{image_id}.qcow2"
    assert c.agent.require_digest is False
    assert c.agent.hook_timeout == 60
    assert c.agent.preserve_extra == ("/srv/data", "/opt/app/state", "/var/lib/db")
    assert c.agent.preserved[-1] == "/var/lib/db"
    assert c.source.endswith("update-agent.conf")


@pytest.mark.parametrize("text,expected", [
    ("20G", 20 << 30), ("512M", 512 << 20), ("1T", 1 << 40), ("4 KiB", 4096), ("100", 100),
    ("2gb", 2 << 30),
])
def test_sizes(tmp_path, text, expected):
    assert load(tmp_path, "max_image_size = %s\n" % text).agent.max_image_size == expected


@pytest.mark.parametrize("text,expected", [
    ("true", True), ("Yes", True), ("on", True), ("1", True),
    ("false", False), ("NO", False), ("off", False), ("0", False),
])
def test_booleans(tmp_path, text, expected):
    assert load(tmp_path, "require_digest = %s\n" % text).agent.require_digest is expected


@pytest.mark.parametrize("body,words", [
    ("colour = blue\n", ["'colour'"]),
    ("require_digest = maybe\n", ["require_digest", "'maybe'"]),
    ("max_image_size = 1.5G\n", ["max_image_size", "'1.5G'"]),
    ("hook_timeout = -1\n", ["hook_timeout", "'-1'"]),
    ("preserve_extra = /srv/ok, srv/relative\n", ["preserve_extra", "'srv/relative'"]),
    ("preserve = /etc/../root\n", ["preserve", "'/etc/../root'"]),
    ("[heat]\ndeploy_actions = UPDATE, REBUILD\n", ["deploy_actions", "'REBUILD'", "CREATE"]),
    ("[heat]\ndeploy_actions =\n", ["deploy_actions", "empty"]),
    ("image_url_template = https://img/latest.qcow2\n",
     ["image_url_template", "'https://img/latest.qcow2'", "{image_id}"]),
])
def test_bad_values_name_key_and_value(tmp_path, body, words):
    with pytest.raises(BadInput) as err:
        load(tmp_path, body)
    for word in words:
        assert word in str(err.value)


def test_deploy_actions_default_to_update_and_take_a_list(tmp_path):
    assert load(tmp_path, "").heat.deploy_actions == ("UPDATE",)
    assert load(tmp_path, "[heat]\ndeploy_actions = create, UPDATE\n").heat.deploy_actions == ("CREATE", "UPDATE")


def test_unknown_section_is_refused(tmp_path):
    with pytest.raises(BadInput, match=r"\[agnet\]"):
        load(tmp_path, "require_digest = no\n", section="[agnet]\n")


def test_default_section_is_not_silently_ignored(tmp_path):
    with pytest.raises(BadInput):
        load(tmp_path, "image_url_template = https://img/latest.qcow2\n", section="[DEFAULT]\n")


def test_dropins_are_read_in_name_order_later_wins(tmp_path):
    base = tmp_path / "update-agent.conf"
    base.write_text("[agent]\nhook_timeout = 10\nremount_retries = 2\n")
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "20-site.conf").write_text("[agent]\nhook_timeout = 30\n")
    (tmp_path / "conf.d" / "10-base.conf").write_text("[agent]\nhook_timeout = 20\n"
                                                       "[daemon]\npoll_interval = 5\n")
    (tmp_path / "conf.d" / "99-ignored.txt").write_text("[agent]\nhook_timeout = 99\n")
    c = config.load(str(base))
    assert c.agent.hook_timeout == 30 and c.agent.remount_retries == 2 and c.daemon.poll_interval == 5
    assert c.origin("agent", "hook_timeout").endswith("20-site.conf")
    assert c.origin("agent", "remount_retries") == str(base)
    assert c.origin("daemon", "poll_interval").endswith("10-base.conf")
    assert c.origin("daemon", "splay") == "(default)"


def test_dropins_apply_without_a_base_file(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "a.conf").write_text("[daemon]\nsplay = 0\n")
    assert config.load(str(tmp_path / "update-agent.conf")).daemon.splay == 0


def test_a_bad_dropin_is_named(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "50-bad.conf").write_text("[daemon]\npoll_interval = often\n")
    with pytest.raises(BadInput, match="50-bad.conf.*poll_interval|poll_interval.*often"):
        config.load(str(tmp_path / "update-agent.conf"))


def test_every_key_is_documented():
    import os
    doc = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "configuration.md")
    with open(doc) as f:
        text = f.read()
    for key in config.KEYS:
        assert "`%s`" % key.name in text, "docs/configuration.md lacks %s" % key.name
        assert "[%s]" % key.section in text


def test_describe_lists_every_key_with_its_origin(tmp_path):
    c = load(tmp_path, "require_digest = no\n")
    rows = {(s, k): (v, o) for s, k, v, o in config.describe(c)}
    assert len(rows) == len(config.KEYS)
    assert rows[("agent", "require_digest")] == (False, str(tmp_path / "update-agent.conf"))
    assert rows[("daemon", "poll_interval")] == (30, "(default)")


def test_the_elements_example_config_names_every_key_and_parses(tmp_path):
    import os
    example = os.path.join(os.path.dirname(__file__), "..", "..", "elements", "update-agent",
                           "static", "etc", "update-agent", "update-agent.conf")
    text = open(example).read()
    for key in config.KEYS:
        assert key.name in text, "the example config does not mention %s" % key.name
    uncommented = "\n".join(line[1:] if line.startswith("#") and " = " in line else line
                            for line in text.splitlines())
    path = tmp_path / "update-agent.conf"
    path.write_text(uncommented)
    loaded = config.load(str(path))  # every example value is valid
    assert loaded.restart.never_restart == config.Config().restart.never_restart


def test_file_images_are_scoped_by_default_and_the_scope_can_be_opened_or_closed(tmp_path):
    # the metadata may point file:// URLs only where images are put on purpose
    assert Config().agent.file_image_dirs == ("/var/lib/os-collect-config",
                                        "/var/lib/update-agent/images-in")
    assert load(tmp_path, "file_image_dirs = /\n").agent.file_image_dirs == ("/",)
    assert load(tmp_path, "file_image_dirs =\n").agent.file_image_dirs == ()  # the cache only
    with pytest.raises(BadInput, match="file_image_dirs: 'images' is not an absolute node path"):
        load(tmp_path, "file_image_dirs = images\n")
