"""The health check's HTTP probes: retried once a second until they pass or the
health timeout ends, on a scripted clock (nothing sleeps, nothing is reached)."""

from fakes import FakeHttp, FakeSystem, Response
from update_agent.apply import health
from update_agent.config import HealthConfig
from update_agent.node.paths import NodePaths

URL = "http://127.0.0.1:8080/healthz"


def check(tmp_path, system, timeout=60):
    return health.check(system, NodePaths(str(tmp_path)), HealthConfig(urls=(URL,), timeout=timeout),
                        {}, None,
                        sleep=system.sleep, monotonic=system.monotonic)


def test_a_probe_that_comes_up_within_the_timeout_passes(tmp_path):
    http = FakeHttp({URL: [Response(503), Response(503), Response(200, b"ok")]})
    system = FakeSystem(http=http)
    assert check(tmp_path, system) == []
    assert [r.url for r in http.requests] == [URL] * 3
    assert system.time.slept == [1, 1]
    assert all(r.timeout == 10 for r in http.requests), "each try is bounded"


def test_a_probe_still_failing_at_the_timeout_is_a_problem_naming_it(tmp_path):
    http = FakeHttp({URL: Response(500)})
    system = FakeSystem(http=http)
    assert check(tmp_path, system, timeout=5) == ["probe %s: HTTP 500" % URL]
    assert len(http.requests) == 6 and sum(system.time.slept) == 5


def test_an_unreachable_probe_says_why(tmp_path):
    system = FakeSystem()  # no response for the URL: unreachable
    assert check(tmp_path, system, timeout=1) == ["probe %s: no route to host" % URL]
