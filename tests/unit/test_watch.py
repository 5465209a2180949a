"""watch.CacheWatcher on a temporary directory: inotify and polling."""

import os
import threading
import time

import pytest

from update_agent.daemon import watch
from update_agent.daemon.watch import CacheWatcher


def later(fn, delay=0.05):
    t = threading.Timer(delay, fn)
    t.start()
    return t


def write(path, text="{}"):
    with open(path, "w") as f:
        f.write(text)


@pytest.fixture
def watcher(tmp_path):
    w = CacheWatcher(str(tmp_path))
    assert w.mode == "inotify"
    yield w
    w.close()


def test_inotify_wakes_on_new_file(watcher, tmp_path):
    t = later(lambda: write(tmp_path / "ec2.json"))
    start = time.monotonic()
    assert watcher.wait(5) is True
    assert time.monotonic() - start < 2
    t.join()


def test_inotify_timeout(watcher):
    start = time.monotonic()
    assert watcher.wait(0.1) is False
    assert time.monotonic() - start >= 0.09


@pytest.mark.parametrize("inotify", [True, False])
def test_wake_fd_returns_early(tmp_path, inotify):
    w = CacheWatcher(str(tmp_path), use_inotify=inotify)
    r, wfd = os.pipe()
    try:
        os.write(wfd, b"x")
        start = time.monotonic()
        assert w.wait(5, r) is False
        assert time.monotonic() - start < 1
    finally:
        os.close(r)
        os.close(wfd)
        w.close()


def test_polling_notices_changed_file(tmp_path, monkeypatch):
    monkeypatch.setattr(watch, "_libc", lambda: None)  # no inotify: polling for good
    write(tmp_path / "a.json", "1")
    w = CacheWatcher(str(tmp_path), use_inotify=False)
    assert w.wait(0.01) is False and w.mode == "polling"
    write(tmp_path / "a.json", "22")
    assert w.wait(0.01) is True
    assert w.wait(0.01) is False
    os.unlink(tmp_path / "a.json")
    assert w.wait(0.01) is True


def test_polling_mode_stays_polling_and_sees_earlier_change(tmp_path):
    write(tmp_path / "a.json", "1")
    w = CacheWatcher(str(tmp_path), use_inotify=False)
    write(tmp_path / "a.json", "22")
    assert w.wait(0.1) is True
    assert w.mode == "polling"


def test_directory_created_later_is_watched(tmp_path):
    d = tmp_path / "cache"
    w = CacheWatcher(str(d))
    assert w.mode == "polling"
    assert w.wait(0.01) is False
    d.mkdir()
    w.wait(0.01)
    assert w.mode == "inotify"
    t = later(lambda: write(d / "heat_local.json"))
    assert w.wait(5) is True
    t.join()
    w.close()


def test_directory_created_with_content_before_wait_is_a_change(tmp_path):
    d = tmp_path / "cache"
    w = CacheWatcher(str(d))
    d.mkdir()
    write(d / "heat_local.json")
    assert w.wait(0.1) is True
    w.close()
