"""Kill the agent anywhere (SIGKILL to its whole process group), start it again,
check the promises: 50 trials with a fixed seed, every journal step boundary and
random instants during the sync. tools/faults.py runs as many as you like."""

import pytest

import faults

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]
TRIALS = faults.plan_trials(50, seed=20261123)


@pytest.fixture(scope="module")
def trials(tmp_path_factory, need_mounts):
    return faults.Trials(str(tmp_path_factory.mktemp("faults")))


@pytest.mark.parametrize("n, point, delay", [(n, p, d) for n, (p, d) in enumerate(TRIALS)],
                         ids=[p or "sync+%03dms" % (d * 1000) for p, d in TRIALS])
def test_kill_anywhere_then_restart_converges(trials, n, point, delay):
    trials.trial(n, point, delay)
