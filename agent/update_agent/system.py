"""The one place that runs commands, reads the clock and opens HTTP requests.

Everything that touches the world outside Python goes through a System, so
tests can see what ran and a dry run can be proven to run nothing disruptive.
"""

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from update_agent.errors import AgentError, CommandFailed
from update_agent.http import Http

LOG = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # runs in the child: no command outlives a killed agent
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class System:
    def __init__(self, clock=time.time, monotonic=time.monotonic, http=None):
        self.clock = clock
        self.monotonic = monotonic
        self.http = http or Http()

    def which(self, name):
        """Find a tool, preferring the agent's own environment (its venv)."""
        search = os.pathsep.join(
            [os.path.dirname(sys.executable), os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
             "/usr/local/sbin", "/usr/sbin", "/sbin"]
        )
        found = shutil.which(name, path=search)
        if not found:
            raise AgentError("required tool %r not found in PATH" % name)
        return found

    def run(self, argv, *, check=True, input=None, env=None, timeout=None,
            capture=True, cwd=None, own_group=False, binary=False):
        """Run argv (never through a shell); return CompletedProcess with text output
        (bytes in and out with binary=True).

        By default the command stays in the agent's process group, so whoever
        stops the agent's group (systemd, a test harness) stops rsync with it.
        own_group=True (hooks with a timeout) gives it a group of its own, so a
        timeout ends it with everything it started. Every command dies with the
        agent (PDEATHSIG): an rsync must never go on writing after the agent is gone.
        """
        argv = [str(a) for a in argv]
        LOG.debug("run: %s", argv)
        try:
            proc = subprocess.Popen(
                argv, env=env, cwd=cwd, text=not binary, start_new_session=own_group,
                preexec_fn=_die_with_parent,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture else None,
                stderr=subprocess.PIPE if capture else None,
            )
        except FileNotFoundError:
            raise AgentError("required tool %r not found" % argv[0])
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(proc, own_group)
            raise AgentError("command %s timed out after %ss" % (" ".join(argv[:3]), timeout))
        except BaseException:
            self.stop(proc, own_group)
            raise
        if binary and err is not None:
            err = err.decode("utf-8", "replace")  # an error is read by a person
        result = subprocess.CompletedProcess(argv, proc.returncode, out, err)
        if check and proc.returncode != 0:
            raise CommandFailed(argv, proc.returncode, err)
        return result

    def reboot(self, method, load=None):
        """Reboot this machine: `systemctl <method>` (reboot, kexec), after the
        kexec --load argv when given. The one place the agent reboots from."""
        if load:
            r = self.run(load, check=False)
            if r.returncode != 0:
                # the firmware and the boot loader still reach the new kernel, once
                LOG.warning("`%s` failed (%s): rebooting through the boot loader instead",
                            " ".join(load), (r.stderr or r.stdout or "").strip() or r.returncode)
                method = "reboot"
        self.run([self.which("systemctl"), method])

    @staticmethod
    def stop(proc, own_group):
        """SIGKILL proc (and its process group if it has its own), then reap it."""
        try:
            if own_group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except ProcessLookupError:
            pass
        proc.wait()

    def stream(self, argv, on_line, env=None):
        """Run argv, calling on_line(text) for each line of its stdout as it comes."""
        argv = [str(a) for a in argv]
        LOG.debug("stream: %s", argv)
        try:
            proc = subprocess.Popen(argv, env=env, text=True, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    preexec_fn=_die_with_parent)
        except FileNotFoundError:
            raise AgentError("required tool %r not found" % argv[0])
        # stderr is drained by a thread so a chatty command cannot block on it
        errors = []
        reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
        reader.start()
        try:
            for line in proc.stdout:
                on_line(line.rstrip("\n"))
            proc.wait()
        except BaseException:
            self.stop(proc, False)
            raise
        finally:
            reader.join()
            proc.stdout.close()
            proc.stderr.close()
        if proc.returncode != 0:
            raise CommandFailed(argv, proc.returncode, "".join(errors))
        return proc.returncode
