"""sync.rsync_argv run by the real rsync: what its --files-from and excludes let through."""

import shutil
import subprocess

import pytest

from update_agent.apply import sync

pytestmark = [pytest.mark.integration]


def test_rsync_refuses_a_listed_path_below_an_excluded_directory(tmp_path):
    # rsync matches a --files-from path by itself, not through its parents: the
    # list may name a file in a directory mounted since the plan, and it must not land
    image, root = tmp_path / "image", tmp_path / "root"
    for tree in (image, root):
        (tree / "srv" / "data").mkdir(parents=True)
    (image / "srv" / "data" / "f").write_text("from the image")
    (image / "srv" / "g").write_text("synced")
    list_file = str(tmp_path / "list")
    sync.write_list(list_file, ["srv/data/f", "srv/g"])
    subprocess.run(sync.rsync_argv(shutil.which("rsync"), list_file, ["/srv/data"], str(image), str(root)),
                   check=True)
    assert not (root / "srv" / "data" / "f").exists()
    assert (root / "srv" / "g").read_text() == "synced"
