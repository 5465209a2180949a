"""The rollout benchmark's own arithmetic (tools/rollout_bench.py): the call counter,
the overlap count and the goal lines it reports. The benchmark itself is not a test."""

import threading

import rollout_bench as rb


class Store:
    errors = ()
    url = "etcd3+http://127.0.0.1:1"

    def get(self, key):
        return "text", 1

    def put(self, key, text, ttl=None):
        return None


def test_counted_store_counts_each_call_per_thread_and_passes_answers_through():
    counted = rb.Counted(Store())
    with counted.connected() as s:
        assert s.get("/k") == ("text", 1)
        s.put("/k", "v", ttl=3)
    other = threading.Thread(target=lambda: counted.get("/k"))
    other.start()
    other.join()
    assert counted.total == 3
    assert counted.mine() == 2  # this thread's; the other thread made one
    assert counted.url == Store.url  # errors name the engine as the real store does


def test_max_overlap_counts_intervals_open_together_and_not_back_to_back_ones():
    assert rb.max_overlap([(0, 2), (1, 3), (1.5, 4)]) == 3
    assert rb.max_overlap([(0, 2), (2, 4), (4, 6)]) == 1
    assert rb.max_overlap([]) == 0


def test_per_waiting_node_divides_requests_by_node_seconds_waited():
    assert rb.per_waiting_node(300, 1500) == 0.2
    assert rb.per_waiting_node(10, 0) == 0.0


def run(**kw):
    r = {"done": 1000, "total_s": 42.0, "per_waiting_node": 0.5, "max_started_sampled": 50,
         "max_running": 50, "errors": 0, "halt_latency": None, "kinds": {}, "dead_drop_s": None}
    return dict(r, **kw)


def test_goal_lines_say_met_or_missed_against_the_issue_goals():
    lines = rb.goal_lines({"poll 10 s": run(), "halt (poll 2 s)": run(halt_latency=-1.0, dead_drop_s=31.0,
                                                                        kinds={"halted": 900})},
                          1000, 50)
    ideal = lines[0]
    assert "1.05 x the ideal 40 s (goal <= 1.10): met" in ideal
    assert "0.500 requests/s per waiting node (goal <= 0.2): MISSED" in ideal
    assert "(limit 50): met" in ideal
    assert "0.00 s after the failure was recorded (goal <= 5 s): met; 900 nodes" in lines[1]
    assert "after 31.0 s" in lines[2]


def test_goal_lines_miss_the_limit_and_the_total_when_not_every_node_finished():
    line = rb.goal_lines({"poll 2 s": run(done=999, max_running=51)}, 1000, 50)[0]
    assert "999 of 1000" in line and "(goal <= 1.10): MISSED" in line
    assert "(limit 50): MISSED" in line
