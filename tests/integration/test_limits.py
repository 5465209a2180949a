"""Limits that cannot bite after the fact: an image_id too long for the file names
made from it, and an image path too long for the system, are refused before
anything on the node changes."""

import json
import os

import pytest

import world
from world import agent, write_metadata

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    return world.World(str(tmp_path_factory.mktemp("limits")))


def one_error_line(stderr):
    # the agent's own image mount is reported as a foreign one (a known fault): not counted
    lines = [ln for ln in stderr.strip().splitlines()
             if "mounted under the root since the plan began" not in ln]
    assert len(lines) == 1 and "Traceback" not in stderr and "unexpected" not in stderr, stderr
    return lines[0]


def test_an_image_id_too_long_is_refused_before_anything_changes(w, node, tmp_path):
    # 250 chars once updated the node, then failed naming the change list: no history
    meta = write_metadata(str(tmp_path / "m.json"), "i" * 250, world.offered(tmp_path, w.image_b),
                          world.sha256(w.image_b))
    before = world.snapshot(node.root)
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 2, r.stderr
    line = one_error_line(r.stderr)
    assert "'image_id'" in line and "250 chars" in line and "limit is 200" in line
    assert world.snapshot(node.root) == before
    assert "ro" in world.root_mount_options(node.root)


def test_an_image_id_at_the_limit_updates_the_node_and_records_it(w, node, tmp_path):
    image_id = "img-" + "x" * 196
    tree = w.tree("img-longid", image_id=image_id, release=world.RELEASE, variant="B")
    image = w.ext4(tree, "img-longid")
    meta = write_metadata(str(tmp_path / "m.json"), image_id, world.offered(tmp_path, image), world.sha256(image))
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 0, r.stderr
    assert world.read(node, "etc/image_id") == (image_id + "\n").encode()
    status = json.loads(agent(node.root, "status", "--json").stdout)
    last = status["history"][-1]
    assert last["image_id"] == image_id and last["result"] == "success"
    assert last["change_list"].endswith("-%s.json" % image_id)


def _deep(top, rel, depth, name_len=250):
    """Make top/rel/d.../d, deeper than a path can name: one directory at a time."""
    fd = os.open(os.path.join(top, rel), os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("d" * name_len, dir_fd=fd)
            nfd = os.open("d" * name_len, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.close(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


def test_an_image_with_a_path_longer_than_path_max_is_refused(w, node, tmp_path):
    tree = w.tree("img-deep", image_id="img-deep", release=world.RELEASE, variant="B")
    if not os.path.exists(os.path.join(tree, "usr/share/d" + "d" * 249)):
        _deep(tree, "usr/share", 17)      # 17 x 251 bytes: over 4096
    image = w.ext4(tree, "img-deep", size_mb=48)
    meta = write_metadata(str(tmp_path / "m.json"), "img-deep", world.offered(tmp_path, image),
                          world.sha256(image))
    before = world.snapshot(node.root)
    r = agent(node.root, "apply", metadata=meta)
    assert r.returncode == 2, r.stderr
    line = one_error_line(r.stderr)
    assert "/usr/share/dddd" in line and "4095" in line and len(line) < 500, line
    assert world.snapshot(node.root) == before
    assert "ro" in world.root_mount_options(node.root)
    assert world.read(node, "etc/image_id") == b"img-A\n"
