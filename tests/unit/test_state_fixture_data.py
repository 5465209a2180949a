"""The stored state dirs of earlier releases (tests/data/state-*): complete, and
free of what belongs to the machine or the run that made them."""

import json
import os

import pytest

import state_fixtures
from update_agent.state import journal

STORED = state_fixtures.stored()


def test_the_journal_format_written_today_has_a_fixture():
    # the release that writes a new format stores its state dirs, for the one after it
    # (tools/make-state-fixture; docs/state.md)
    formats = {state_fixtures.load(v, c)["journal_format"] for v, c in STORED}
    assert journal.FORMAT in formats, "no fixture of journal format %d" % journal.FORMAT


@pytest.mark.parametrize("version, name", STORED, ids=["%s/%s" % s for s in STORED])
def test_a_stored_case_says_what_wrote_it_and_how_to_bring_the_root_back(version, name):
    case = state_fixtures.load(version, name)
    assert version == "state-" + case["agent_version"]
    assert case["runs"] and all("apply" in run for run in case["runs"])
    assert {"apply", "result"} <= set(case["next"])
    with open(os.path.join(state_fixtures.DATA, version, name, "state", "journal.json")) as f:
        assert json.load(f)["format"] == case["journal_format"]


@pytest.mark.parametrize("version, name", STORED, ids=["%s/%s" % s for s in STORED])
def test_a_stored_state_dir_holds_no_digest_path_or_kernel_of_its_machine(version, name):
    state = os.path.join(state_fixtures.DATA, version, name, "state")
    for dirpath, _dirs, files in os.walk(state):
        for filename in files:
            with open(os.path.join(dirpath, filename)) as f:
                text = f.read()
            assert not state_fixtures.DIGEST.search(text), filename
            assert "/tmp/" not in text and "/pytest-" not in text, filename


def test_placeholders_go_in_and_come_out_whole():
    values = {"{{node}}": "/tmp/t/node", "{{digest:img-B}}": "sha256:" + "ab" * 32,
              "{{release}}": "6.1.0-9-amd64"}
    text = 'file:///tmp/t/node/root/x {"d": "sha256:%s", "k": "boot/vmlinuz-6.1.0-9-amd64"}' % ("ab" * 32)
    stored = state_fixtures.to_placeholders(text, values)
    assert stored == 'file://{{node}}/root/x {"d": "{{digest:img-B}}", "k": "boot/vmlinuz-{{release}}"}'
    assert state_fixtures.from_placeholders(stored, values) == text
