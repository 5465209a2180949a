"""A repository fetch's shared pace, and how the pool addresses a server or a proxy."""

import pytest

from update_agent.errors import AgentError
from update_agent.http import Pool
from update_agent.repo.client import Pace


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_deadline_counts_the_whole_fetch_not_one_request():
    clock = Clock()
    pace = Pace(deadline_s=10, min_rate=0, window_s=60, monotonic=clock)
    clock.now += 6
    pace.count(1000, "packs/a")
    clock.now += 5  # a second request, 11 s after the fetch began
    with pytest.raises(AgentError, match=r"not done after 11s \(download_timeout = 10\), 2000 bytes"):
        pace.count(1000, "packs/b")


def test_a_fetch_slower_than_the_minimum_rate_over_a_window_is_abandoned():
    clock = Clock()
    pace = Pace(deadline_s=0, min_rate=1000, window_s=10, monotonic=clock)
    clock.now += 10
    pace.count(20_000, "objects/x")  # 2000 bytes/s: fine, a new window starts
    clock.now += 10
    with pytest.raises(AgentError, match="100 bytes/s over the last 10s, below download_min_rate = 1000"):
        pace.count(1000, "objects/x")


def test_the_pool_asks_a_server_for_paths_and_a_proxy_for_absolute_urls():
    direct = Pool("http://repo.example:8080/r")
    assert direct.url("packs/aa/x.pack") == "http://repo.example:8080/r/packs/aa/x.pack"
    assert direct._target("packs/aa/x.pack") == "/r/packs/aa/x.pack"
    proxied = Pool("http://repo.example:8080/r/", proxy="http://cache.rack1:3128")
    assert proxied._target("packs/aa/x.pack") == "http://repo.example:8080/r/packs/aa/x.pack"
    assert proxied._headers(None)["Host"] == "repo.example:8080"
    # https through a proxy is a tunnel: the request itself names the path only
    tunnel = Pool("https://repo.example/r/", proxy="http://cache.rack1:3128")
    assert tunnel._target("x") == "/r/x"
