"""Waiting for a stage step on etcd: a thread blocks on the engine's watch of
this node's wake key and, when a node whose step ended wakes it, wakes the
daemon's loop through its wake pipe, so that it looks at once rather than at
its next poll. Where the engine has no watch, the loop polls as before."""

import contextlib
import logging
import os
import threading
import time

from update_agent.coordination.stores import Watched
from update_agent.errors import AgentError

LOG = logging.getLogger(__name__)


class TurnWatch:
    def __init__(self, fleet, wake_fd):
        """fleet: update.fleet.NodeInFleet; wake_fd: the write end of the loop's wake pipe."""
        self.fleet, self.wake_fd = fleet, wake_fd
        self._thread = None
        self._failing = ""  # the watch error logged last: logged again only once it changes

    def start(self, timeout, retry):
        """Watch for up to timeout seconds, unless a watch runs already. False where
        the engine has no watch: the caller polls. A watch that fails wakes the
        loop after retry seconds instead, as a poll would."""
        if not self.fleet.watches():
            return False
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._wait, args=(timeout, retry),
                                            name="turn-watch", daemon=True)
            self._thread.start()
        return True

    def _wait(self, timeout, retry):
        try:
            woken = self.fleet.wait_turn(timeout)
        except AgentError as e:  # the engine restarts, say: look again as if polling
            self._log(str(e))
            time.sleep(retry)
            woken = Watched.CHANGED
        except Exception as e:  # a client library's own error: the same
            self._log("%s: %s" % (type(e).__name__, e))
            time.sleep(retry)
            woken = Watched.CHANGED
        else:
            self._failing = ""
        if woken == Watched.CHANGED:
            with contextlib.suppress(BlockingIOError):  # the pipe is full: the loop wakes anyway
                os.write(self.wake_fd, b"w")

    def _log(self, error):
        if error != self._failing:
            LOG.warning("watching for this node's turn: %s; polling until it answers", error)
        self._failing = error
