"""The member record's heartbeat: a thread that writes it again every third of its
ttl, so that a node busy with a long sync or waiting for a stage stays a live
member of its group, and a dead one drops out within the ttl."""

import logging
import threading

from update_agent.errors import AgentError

LOG = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, beat, interval):
        self.beat, self.interval = beat, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self._failing = ""  # the error logged last: logged again only once it changes

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=self.interval + 10)

    def _loop(self):
        while True:
            self._once()
            if self._stop.wait(self.interval):
                return

    def _once(self):
        try:
            self.beat()
        except AgentError as e:
            if str(e) != self._failing:
                LOG.warning("member heartbeat: %s", e)
            self._failing = str(e)
            return
        except Exception as e:  # a client library's own error: the next beat tries again
            if repr(e) != self._failing:
                LOG.warning("member heartbeat: %s: %s", type(e).__name__, e)
            self._failing = repr(e)
            return
        if self._failing:
            LOG.info("member heartbeat: the engine answers again")
            self._failing = ""
