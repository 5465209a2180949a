"""systemd's notify protocol: READY=1, STATUS=..., WATCHDOG=1, STOPPING=1.

Datagrams to $NOTIFY_SOCKET (a path, or an abstract name starting with '@').
Without it (not under systemd) every call does nothing. The watchdog is fed by
a thread, so pings keep coming while a long step (rsync, a hook) runs.
"""

import logging
import os
import socket
import threading

LOG = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ=None):
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_usec = int(usec) if usec.isdigit() and (not pid or pid == str(os.getpid())) else 0
        self._sock = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self.last_status = ""

    @property
    def enabled(self):
        return bool(self.address)

    def send(self, *lines):
        if not self.address:
            return
        data = "\n".join(lines).encode("utf-8", "replace")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(data, self.address)
            except OSError as e:
                LOG.debug("sd_notify to %r failed: %s", self.address, e)

    def ready(self, status="idle"):
        self.last_status = status
        self.send("READY=1", "STATUS=" + status)

    def status(self, text):
        if text != self.last_status:
            self.last_status = text
            self.send("STATUS=" + text)

    def stopping(self):
        self.send("STOPPING=1")

    def start_watchdog(self):
        """Ping at half the watchdog interval until stop_watchdog()."""
        if not self.watchdog_usec or self._thread is not None:
            return
        interval = self.watchdog_usec / 2e6

        def loop():
            while not self._stop.wait(interval):
                self.send("WATCHDOG=1")
        self._thread = threading.Thread(target=loop, name="watchdog", daemon=True)
        self._thread.start()

    def stop_watchdog(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
