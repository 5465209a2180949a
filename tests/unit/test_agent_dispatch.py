"""Agent.update: which path a plan takes, and what a journal left by a reboot decides.

Pure: the planner, both executors, the locks and the health check are fakes; the
journal is a real one in a temporary state dir.
"""

import contextlib
import types

import pytest

from fakes import FakeSystem
from update_agent.apply.inplace import StepFailed
from update_agent.config import AgentConfig, Config
from update_agent.decide import plan as planning
from update_agent.node.paths import NodePaths
from update_agent.reboot import steps as rebooting
from update_agent.sources.desired import Desired
from update_agent.state.journal import Journal
from update_agent.update import agent as agent_mod
from update_agent.update.planner import Planned

WANT = Desired("img-2", "file:///images/img-2.img", "sha256:two")
FACTS = object()        # handed through to the executor untouched
TREE = "/work/tree"
ENTRIES = {"etc": "image entries"}
BOOT_ID = "boot-after"


def plan(action, **kw):
    base = dict(image_id="img-2", current_image_id="img-1", digest="sha256:two",
                running_kernel="6.1.0-9-amd64", image_kernel="6.1.0-10-amd64",
                reasons=("image_id img-2 differs from current img-1",))
    base.update(kw)
    return planning.Plan(action, **base)


def reboot_journal(image_id="img-2", **kw):
    base = dict(image_id=image_id, digest="sha256:" + image_id, previous_image_id="img-1",
                previous_digest="sha256:one", action="reboot", root_was_ro=True, started_at=0.0,
                steps={"sync": "done", "reboot": "done"}, status="running",
                kernel="6.1.0-10-amd64", old_kernel="6.1.0-9-amd64", boot_id="boot-before")
    base.update(kw)
    return Journal(**base)


class FakePlanner:
    def __init__(self, plan):
        self.plan = plan
        self.replan = lambda: None

    def check_trust(self):
        pass

    def check_state_trust(self):
        pass

    def rollout_policy(self, want):
        return None  # no fleet rollout: the dispatch as on a single node

    def stage(self, want, **kw):
        return None

    @contextlib.contextmanager
    def planned(self, want, **kw):
        yield Planned(self.plan, FACTS, TREE, ENTRIES, self.replan)


class FakeInPlace:
    def __init__(self):
        self.applied = []
        self.remounted = False
        self.journal = Journal("img-2", "", "img-1", "", "in-place", False, 0.0)

    def apply(self, plan, facts, tree, entries, replan=None):
        self.applied.append((plan, facts, tree, entries, replan))
        return {"restarts": {}}

    def failed_before(self):
        return set()

    def remount_ro(self):
        self.remounted = True


class FakeReboot:
    """Stands in for RebootExecutor; every one made is kept in `made`."""

    made = []

    def __init__(self, system, paths, config, state, images, **kw):
        self.kw = kw
        self.slots = kw["slots"]
        self.started = []
        self.finished = []
        self.finish_error = None
        FakeReboot.made.append(self)

    def start(self, plan, facts, tree, entries):
        self.started.append((plan, facts, tree, entries))

    def finish(self, j, image_entries=None):
        self.finished.append((j.image_id, image_entries))
        if self.finish_error is not None:
            raise self.finish_error

    def remount_ro(self):
        pass


@pytest.fixture
def env(tmp_path, monkeypatch):
    def make(action_plan, config=Config()):
        root = tmp_path / "root"
        root.mkdir(exist_ok=True)
        system = FakeSystem(now=100.0)
        agent = agent_mod.Agent(NodePaths(str(root)), config, system, read_mounts=lambda: [])
        agent.planner = FakePlanner(action_plan)
        agent.lock = lambda timeout=0: contextlib.nullcontext()
        agent.orc_lock = lambda: contextlib.nullcontext()
        inplace = FakeInPlace()
        agent.executor = lambda should_stop=None, status=None, migrate=True: inplace
        agent._health = lambda plan, before: []
        agent.images = types.SimpleNamespace(cached_manifest=lambda digest: {"cached": digest})
        return types.SimpleNamespace(agent=agent, inplace=inplace)
    FakeReboot.made = []
    monkeypatch.setattr(rebooting, "RebootExecutor", FakeReboot)
    monkeypatch.setattr(rebooting, "current_boot_id", lambda paths: BOOT_ID)
    monkeypatch.setattr(agent_mod.live, "restart_self", lambda *a: None)
    return make


def test_an_in_place_plan_is_applied_by_the_in_place_executor(env):
    e = env(plan(planning.IN_PLACE, image_kernel="6.1.0-9-amd64"))
    out = e.agent.update(WANT)
    assert out.result == "success" and out.ok
    assert e.inplace.applied == [(out.plan, FACTS, TREE, ENTRIES, e.agent.planner.replan)]
    assert FakeReboot.made == []


def test_a_rollback_plan_takes_the_in_place_path_too(env):
    e = env(plan(planning.ROLLBACK, image_kernel="6.1.0-9-amd64"))
    assert e.agent.update(WANT, rollback=True).result == "success"
    assert len(e.inplace.applied) == 1 and FakeReboot.made == []


def test_a_reboot_plan_starts_the_reboot_path_and_nothing_in_place(env):
    e = env(plan(planning.REBOOT))
    out = e.agent.update(WANT)
    assert out.result == "rebooting" and out.ok
    assert e.inplace.applied == []
    [executor] = FakeReboot.made
    assert executor.started == [(out.plan, FACTS, TREE, ENTRIES)]
    # a sandbox root is never this machine: the executor records the reboot instead
    assert executor.kw["reboot"] is None


def test_a_noop_plan_runs_no_executor(env):
    e = env(plan(planning.NOOP, reasons=("image_id img-2 is already current",)))
    out = e.agent.update(WANT)
    assert out.result == "noop" and out.exit_code == 0
    assert e.inplace.applied == [] and FakeReboot.made == []


def test_a_refused_plan_changes_nothing_and_says_why(env):
    e = env(plan(planning.REFUSE, reasons=("image_id img-2 differs from current img-1",
                                           "the root filesystem has recorded 3 errors")))
    out = e.agent.update(WANT)
    assert out.result == "refused" and out.exit_code == 1
    assert out.error == "refused to apply image img-2: the root filesystem has recorded 3 errors"
    assert e.inplace.applied == [] and not e.inplace.remounted and FakeReboot.made == []


@pytest.mark.parametrize("policy, result", [("manual", "reboot-required"), ("never", "refused")])
def test_a_reboot_the_policy_does_not_allow_is_not_started(env, policy, result):
    e = env(plan(planning.REBOOT), Config(agent=AgentConfig(reboot=policy)))
    out = e.agent.update(WANT)
    assert out.result == result and out.exit_code == 1
    assert "needs kernel 6.1.0-10-amd64 (running 6.1.0-9-amd64)" in out.error
    assert "nothing was changed" in out.error
    assert FakeReboot.made[0].started == []
    # an operator's `update-agent reboot` overrides the policy
    assert e.agent.update(WANT, force_reboot=True).result == "rebooting"
    assert FakeReboot.made[1].started


def test_after_the_reboot_the_checks_finish_the_journal(env):
    e = env(plan(planning.REBOOT))
    e.agent.state.journal.save(reboot_journal())
    out = e.agent.update(WANT)
    assert out.result == "success"
    [executor] = FakeReboot.made
    assert executor.finished == [("img-2", {"cached": "sha256:img-2"})]
    assert executor.started == [] and e.inplace.applied == []


def test_still_the_boot_that_asked_for_the_reboot_means_it_is_going_down(env):
    e = env(plan(planning.REBOOT))
    e.agent.state.journal.save(reboot_journal(boot_id=BOOT_ID))
    out = e.agent.update(WANT)
    assert out.result == "rebooting"
    assert FakeReboot.made[0].finished == [] and FakeReboot.made[0].started == []


def test_a_failed_health_check_after_the_reboot_is_unhealthy(env, monkeypatch):
    e = env(plan(planning.REBOOT))
    e.agent.state.journal.save(reboot_journal())
    error = StepFailed("health", "unit app.service failed")
    real = FakeReboot.__init__

    def failing(self, *a, **kw):
        real(self, *a, **kw)
        self.finish_error = error
    monkeypatch.setattr(FakeReboot, "__init__", failing)
    out = e.agent.update(WANT)
    assert out.result == "unhealthy" and out.exit_code == 1
    assert "unit app.service failed" in out.error


def test_an_unhealthy_reboot_does_not_hold_back_a_new_image(env):
    """The checks of img-2 failed; the metadata now asks for img-3: img-3 is
    planned and applied, not made to wait for img-2's checks."""
    e = env(plan(planning.IN_PLACE, image_id="img-3", image_kernel="6.1.0-9-amd64"))
    e.agent.state.journal.save(reboot_journal(status="failed", failed_step="health"))
    assert e.agent.update(Desired("img-3", "file:///images/img-3.img", "")).result == "success"
    assert len(e.inplace.applied) == 1

    e = env(plan(planning.REBOOT, image_id="img-3"))
    out = e.agent.update(Desired("img-3", "file:///images/img-3.img", ""))
    assert out.result == "rebooting"
    assert FakeReboot.made[-1].finished == [] and FakeReboot.made[-1].started


def test_the_same_image_after_an_unhealthy_reboot_still_waits_for_its_checks(env):
    e = env(plan(planning.REBOOT))
    e.agent.state.journal.save(reboot_journal(status="failed", failed_step="health"))
    assert e.agent.update(WANT).result == "success"
    assert FakeReboot.made[0].finished == [("img-2", {"cached": "sha256:img-2"})]


def test_a_resumed_reboot_keeps_the_slot_its_journal_holds(env):
    e = env(plan(planning.REBOOT, resume=True))
    e.agent.state.journal.save(reboot_journal(steps={"sync": "done"}, status="failed",
                                              failed_step="reboot", slot_node="node-a"))
    e.agent._slots = lambda turn=None: types.SimpleNamespace(node="node-b")
    assert e.agent.update(WANT).result == "rebooting"
    [executor] = FakeReboot.made
    assert executor.slots.node == "node-a"
    assert executor.started and executor.finished == []


def test_a_resumed_in_place_update_is_applied_again(env):
    e = env(plan(planning.IN_PLACE, resume=True, image_kernel="6.1.0-9-amd64"))
    e.agent.state.journal.save(Journal("img-2", "sha256:two", "img-1", "sha256:one", "in-place",
                                       True, 0.0, steps={"sync": "started"}, status="failed",
                                       failed_step="sync"))
    assert e.agent.update(WANT).result == "success"
    [(applied, *_)] = e.inplace.applied
    assert applied.resume


def test_a_refused_plan_over_a_partial_update_makes_the_root_read_only_again(env):
    e = env(plan(planning.REFUSE, reasons=("the root filesystem has recorded 3 errors",)))
    e.agent.state.journal.save(Journal("img-2", "sha256:two", "img-1", "sha256:one", "in-place",
                                       True, 0.0, steps={"sync": "started"}, status="failed",
                                       failed_step="sync"))
    out = e.agent.update(WANT)
    assert out.result == "refused"
    assert e.inplace.remounted
    assert "partial update to img-2 (stopped at step sync); it is read-only again" in out.error
