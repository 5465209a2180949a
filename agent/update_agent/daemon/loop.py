"""`update-agent run`: watch the metadata, update, report; never give up.

The loop is: wait for a change (inotify on os-collect-config's cache, or a
conditional GET of metadata_url with a splayed interval), read the metadata,
hand each Heat deployment of our group (or the top-level image_id) to
Agent.update, report the outcome (status file, systemd STATUS=, metrics, Heat
signal), and back off exponentially, capped at the poll interval, while
something fails. Bad metadata, a bad image or a metadata server that is down
is logged and reported, and the daemon keeps going. SIGTERM stops it between
two steps of an update (the root is left read-only) or at once when idle.
"""

import fcntl
import logging
import os
import random
import select
import signal
import time

from update_agent import sources
from update_agent.daemon import metrics
from update_agent.daemon.heartbeat import Heartbeat
from update_agent.daemon.turns import TurnWatch
from update_agent.errors import AgentError
from update_agent.logs import log_fields
from update_agent.sources import heat
from update_agent.state import locks
from update_agent.state.states import Result

LOG = logging.getLogger(__name__)

BACKOFF_BASE = 2.0
# the fleet's rollout holds the node (no plan was made): looked at again, not a failure
ROLLOUT_WAITS = (Result.WAITING, Result.HALTED)


def backoff(failures, interval):
    """Seconds to wait after `failures` failures in a row (0: none)."""
    if failures <= 0:
        return float(interval)
    return min(float(interval), BACKOFF_BASE * 2 ** (failures - 1))


def run_deployment(d, url_template, update, actions=("UPDATE",)):
    """Apply one deployment with update(want) -> Outcome; return (signal body, record).
    url_template: the config's image_url_template; actions: [heat] deploy_actions.

    record is what to remember once Heat has the signal, None if the
    deployment must be tried again (it failed).
    """
    if not d.update_identifier:
        LOG.info("deployment %s: %s", d.id, heat.UNSET_MESSAGE)
        return heat.payload(message=heat.UNSET_MESSAGE), "unset"
    ignored = heat.ignored_because(d, actions)
    if ignored:
        # signalled done, so Heat does not wait out its timeout; recorded, so said once
        LOG.info("deployment %s: %s", d.id, ignored)
        return heat.payload(message=ignored), "ignored"
    try:
        want = heat.desired(d, url_template)
    except AgentError as e:
        LOG.error("deployment %s: %s", d.id, e)
        return heat.payload(error=str(e)), None
    outcome = update(want)
    if outcome.result in (Result.REBOOTING, Result.WAITING, Result.HALTED):
        # in progress: rebooting (Heat hears once the node is back and checked) or
        # waiting for a fleet slot; Heat never revises a failure, so say nothing yet
        return None, None
    return heat.payload(outcome), (Result.SUCCESS if outcome.ok else None)


class CacheWatch:
    """os-collect-config's cache: woken by inotify, read through os-apply-config."""

    def __init__(self, agent, watcher):
        self.agent = agent
        self.watcher = watcher

    @property
    def splayed(self):
        # polling while inotify is not (or no longer) watching the directory
        return self.watcher.mode == "polling"

    def describe(self):
        return "watching %s (%s)" % (self.watcher.directory, self.watcher.mode)

    def wait(self, timeout, wake_fd):
        return self.watcher.wait(timeout, wake_fd)

    def read(self):
        return sources.read_metadata(self.agent.paths)


class UrlWatch:
    """metadata_url, polled with conditional GETs at a splayed interval."""

    splayed = True

    def __init__(self, source):
        self.source = source

    def describe(self):
        return "polling %s" % self.source.url

    def wait(self, timeout, wake_fd):
        select.select([wake_fd], [], [], max(0.0, timeout))
        return False

    def read(self):
        return self.source.poll()


class Daemon:
    def __init__(self, agent, watch, notifier, signaller, rng=None, clock=time.time):
        self.agent = agent
        self.watch = watch
        self.notifier = notifier
        self.signaller = signaller
        self.rng = rng or random.Random()
        self.clock = clock
        self.config = agent.config.daemon  # the [daemon] section: all the loop reads
        self.rollout = agent.config.rollout  # how often to look again while a rollout waits
        self.waiting = ""  # why the fleet's rollout keeps this node waiting ("": it does not)
        self.rollout_said = ""  # the rollout wait logged last
        self.image_said = None  # the image whose success or no-op was logged last
        self.turns = None  # the watch for this node's turn (a TurnWatch), once the loop runs
        self.url_template = agent.config.agent.image_url_template
        self.deploy_actions = agent.config.heat.deploy_actions
        self.stopping = False
        self.failures = 0
        self.last_metadata = None
        self.signalled_failures = set()
        # the failure last logged as an ERROR: the same one again, at every backoff
        # (each poll interval, forever, for a refused image), is only noted at INFO
        self.failure_logged = None

    # --- signals ---------------------------------------------------------
    def _install_signals(self):
        r, w = os.pipe()
        for fd in (r, w):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self._wake_r = r
        signal.set_wakeup_fd(w)
        self.turns = TurnWatch(self.agent.fleet, w)

        def stop(signum, _frame):
            # no I/O here: a signal landing inside a log write would raise in it
            self.stopping = self.stopping or signum
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    # --- the loop --------------------------------------------------------
    def run(self, once=False):
        with locks.flock(os.path.join(self.agent.paths.run_dir, "daemon.lock"),
                         "another update-agent daemon"):
            self._install_signals()
            self.notifier.ready("idle, " + self.watch.describe())
            self.notifier.start_watchdog()
            LOG.info("daemon started: %s", self.watch.describe())
            beating = Heartbeat(self.agent.beat, self.rollout.member_ttl / 3.0).start()
            try:
                self._loop(once)
            finally:
                beating.stop()
                if self.stopping:
                    LOG.info("signal %d: stopped after the current step", self.stopping)
                self.notifier.stopping()
                self.notifier.stop_watchdog()
                LOG.info("daemon stopped")
        # --once: say whether the metadata was handled (the service runs until stopped)
        return 1 if once and self.failures else 0

    def _loop(self, once):
        if isinstance(self.watch, UrlWatch) and self.config.splay and not once \
                and not self._unfinished():
            # a fleet that boots together must not poll the server together either
            # (but a node back from an update's reboot finishes it at once: it holds a slot)
            self.watch.wait(self.rng.uniform(0, self.config.splay), self._wake_r)
            self._drain_wake()
        changed = True  # look once at start: an update may be pending or unfinished
        while not self.stopping:
            if changed or self.failures or self.waiting:
                self.tick()
            if once or self.stopping:
                return
            timeout = self._timeout()
            if self.watch.splayed and not self.failures:
                timeout += self.rng.uniform(0, self.config.splay)
            changed = self.watch.wait(timeout, self._wake_r)
            if not changed and not self.failures and self.watch.splayed:
                changed = True  # a poll is due
            self._drain_wake()

    def _timeout(self):
        """How long the loop sleeps: a waiting node until it is woken (a watch), or
        its next poll of the engine; else the metadata's poll or the backoff."""
        if self.waiting and self.turns is not None and self.turns.start(self.rollout.watch_timeout,
                                                                 self.rollout.poll_interval):
            return self.rollout.watch_timeout
        if self.waiting:
            return self.rollout.poll_interval
        return backoff(self.failures, self.config.poll_interval)

    def _unfinished(self):
        try:
            j = self.agent.state.journal.load()
        except AgentError:
            return True  # the tick reports it
        return j is not None and j.unfinished

    def _drain_wake(self):
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def tick(self):
        """Read the metadata and act on it; failures are counted, never raised."""
        waiting, self.waiting = self.waiting, ""
        try:
            metadata = self.watch.read()
            if metadata is None and not self.failures and not waiting:
                return  # unchanged (HTTP 304)
            if metadata is None:
                metadata = self.last_metadata
            self.last_metadata = metadata
            ok = self.handle(metadata) or bool(self.waiting)
        except AgentError as e:
            self._log_failure(str(e), "%s", e)
            self._report(None, error=str(e))
            ok = False
        except Exception as e:  # a bug or a surprise must not stop the daemon: back off
            LOG.exception("unexpected %s: %s", type(e).__name__, e)
            self._report(None, error="unexpected %s: %s" % (type(e).__name__, e))
            ok = False
        self.failures = 0 if ok else self.failures + 1
        if ok and self.failure_logged is not None:
            LOG.info("the failure logged before is over")
            self.failure_logged = None
        if not ok:
            LOG.log(logging.INFO if self.failures > 1 else logging.WARNING, "will retry in %.0fs",
                    backoff(self.failures, self.config.poll_interval))

    def _log_failure(self, key, msg, *args, **kw):
        repeat = key == self.failure_logged
        self.failure_logged = key
        self.image_said = None  # the next success or no-op is news again
        LOG.log(logging.INFO if repeat else logging.ERROR, msg + (" (again)" if repeat else ""),
                *args, **kw)

    def handle(self, metadata):
        hold = self.agent.state.flags.hold()
        if hold:
            self.notifier.status("held: %s" % hold.get("reason", ""))
            LOG.info("updates are held (%s); not acting on the metadata", hold.get("reason"))
            return True
        deployments = heat.deployments(metadata)
        if deployments:
            results = [self.handle_deployment(d) for d in deployments if not self.stopping]
            return all(results)
        if "deployments" in metadata and "image_id" not in metadata:
            self.notifier.status("idle: no deployment of group %s" % heat.GROUP)
            return True  # a Heat-managed node without an update for us: nothing to do
        want = self.agent.planner.desired_of(metadata)
        outcome = self.update(want)
        return outcome.ok

    def update(self, want):
        self.notifier.status("checking %s" % want.image_id)
        outcome = self.agent.update(want, should_stop=lambda: self.stopping,
                                    status=self.notifier.status)
        fields = log_fields(want.image_id, outcome.plan.action if outcome.plan else None,
                            None, outcome.result)
        error = ": " + outcome.error if outcome.error else ""
        if outcome.plan is None and outcome.result in ROLLOUT_WAITS:
            self._rollout_wait(want, outcome, fields)
        elif outcome.ok:
            # os-collect-config rewrites its cache at every poll: a no-op on the image
            # the node already has was said once, and is not said again at each poll
            again = outcome.result == Result.NOOP and self.image_said == want.image_id
            LOG.log(logging.DEBUG if again else logging.INFO, "image %s: %s%s", want.image_id,
                    outcome.result, error, extra=fields)
            self.image_said = want.image_id
        elif outcome.result == Result.INTERRUPTED:  # a stop asked for, not a fault: the next start resumes
            LOG.warning("image %s: %s%s", want.image_id, outcome.result, error, extra=fields)
        else:
            self._log_failure((want.image_id, outcome.result, outcome.error), "image %s: %s%s",
                              want.image_id, outcome.result, error, extra=fields)
        self._report(outcome, desired=want)
        return outcome

    def _rollout_wait(self, want, outcome, fields):
        """The fleet's rollout holds this node: said once (again when the reason
        changes), and looked at again every [rollout] poll_interval, not backed off."""
        if outcome.error != self.rollout_said:
            level = logging.WARNING if outcome.result == Result.HALTED else logging.INFO
            LOG.log(level, "image %s: %s: %s", want.image_id, outcome.result, outcome.error,
                    extra=fields)
            self.rollout_said = outcome.error
        self.notifier.status("%s: %s" % (outcome.result, outcome.error))
        self.waiting = outcome.error

    def handle_deployment(self, d):
        if d.key in self.agent.state.flags.deployments_done():
            return True
        body, record = run_deployment(d, self.url_template, self.update, self.deploy_actions)
        return self._finish(d, body, record)

    def _finish(self, d, body, record):
        """Signal Heat; remember the deployment only once it succeeded and Heat knows."""
        if body is None:
            return False  # in progress: come back (with backoff), nothing to say yet
        failed = body["deploy_status_code"] != 0
        if failed and (d.key, body["deploy_stderr"]) in self.signalled_failures:
            return False  # Heat already has this failure; keep retrying quietly
        try:
            self.signaller.send(d, body)
        except AgentError as e:
            LOG.error("%s", e)
            return False
        if failed:
            self.signalled_failures.add((d.key, body["deploy_stderr"]))
            return False
        self.agent.state.flags.mark_deployment_done(d.key, {"result": record, "image_id": body["image_id"],
                                                      "at": self.clock()})
        return True

    # --- reporting -------------------------------------------------------
    @staticmethod
    def _current(state):
        """The committed image for the metrics; "" while images.json is damaged (the
        update that read it said so): the report must not fail over it."""
        try:
            return (state.records.load().get("current") or {}).get("image_id", "")
        except AgentError:
            return ""

    def _report(self, outcome, desired=None, error=""):
        state = self.agent.state
        status = state.flags.load_status()
        status["updated_at"] = self.clock()
        if desired is not None:
            status["desired"] = desired.to_dict()
        if outcome is not None:
            status["last_result"] = outcome.to_dict()
            status.pop("last_error", None)  # an older error: this outcome is the news
            self.notifier.status("%s %s%s" % (outcome.image_id, outcome.result,
                                              ": " + outcome.error[:200] if outcome.error else ""))
        else:
            status["last_error"] = error
            self.notifier.status("error: %s" % error[:200])
        try:
            state.flags.save_status(status)
            current = self._current(state)
            metrics.write(self.config.metrics_dir, metrics.render(
                current, outcome, self.agent.images.staged_bytes(), bool(state.flags.hold()), self.clock()))
        except OSError as e:
            LOG.error("cannot write status: %s", e)
