"""An agent upgrade: today's agent takes over a state dir an earlier release wrote.

The agent arrives with each new image, so the state dir it first reads (the
journal of an update in progress, the image records, the history) was written
by the release before it. Every fixture ever stored under tests/data/state-*/
(tools/state_fixtures.py) is installed on a sandbox node whose root is in the
state it was made in, and today's agent must see it as that release did and
finish or continue from it, exactly as from a state dir it wrote itself."""

import json

import pytest

import state_fixtures
import world
from world import agent

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]
STORED = state_fixtures.stored()


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    return state_fixtures.FixtureWorld(str(tmp_path_factory.mktemp("upgrade")))


def status(root):
    r = agent(root, "status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def what_status_tells(obj):
    """What an operator reads in `status`, in words that outlive a release's step names."""
    u = obj["unfinished_update"]
    return (obj["current_image_id"], obj["previous_image_id"],
            u and (u["image_id"], bool(u["mixed"])))


def history(root):
    r = agent(root, "history", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("version, name", STORED, ids=["%s/%s" % s for s in STORED])
def test_a_state_dir_an_earlier_release_wrote_is_taken_over(w, tmp_path, version, name):
    case = state_fixtures.load(version, name)
    node = w.node(str(tmp_path))
    try:
        state_fixtures.replay(w, node, tmp_path, case["runs"])
        preserved = {rel: world.read(node, rel) for rel in world.PRESERVED_FILES}
        values = w.placeholders(node, state_fixtures.image_ids(case))
        state_fixtures.install(node, version, name, values)
        old = history(node.root)

        then = json.loads(state_fixtures.from_placeholders(json.dumps(case["status"]), values))
        assert what_status_tells(status(node.root)) == what_status_tells(then)

        nxt = case["next"]
        r = agent(node.root, "apply", "--json", metadata=w.metadata(tmp_path, nxt["apply"]))
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["result"] == nxt["result"], r.stderr
        if "resume" in nxt:
            assert out["resume"] is nxt["resume"], "resumed the journalled update: %s" % out["resume"]

        assert world.read(node, "etc/image_id") == ("%s\n" % nxt["apply"]).encode()
        world.assert_matches_image(node.root, w.tree_of(nxt["apply"]))
        assert {rel: world.read(node, rel) for rel in preserved} == preserved
        assert "ro" in world.root_mount_options(node.root), "root left read-write"
        new = history(node.root)
        assert new[:len(old)] == old, "the earlier release's history is kept as it was"
        assert [h["result"] for h in new[len(old):]] == [nxt["result"]]
        after = status(node.root)
        assert after["unfinished_update"] is None and after["current_image_id"] == nxt["apply"]
        assert after["damaged"] == []
    finally:
        node.stop()
