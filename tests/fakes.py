"""Shared fakes for unit tests: a recording System with a scripted clock, and an
HTTP opener with canned responses.

FakeSystem is a real update_agent.system.System whose world is faked: run and
stream record their argv and answer from a script instead of starting a process;
the clock moves only when told (or by `tick` at each monotonic read), and sleep
advances it at once; reboot is recorded, then goes through System.reboot, so
what it would run is recorded too. FakeHttp stands where System.http stands.
"""

import dataclasses
import email.message
import io
import subprocess
import urllib.error

from update_agent.errors import CommandFailed
from update_agent.system import System


@dataclasses.dataclass(frozen=True)
class Ran:
    """One command a FakeSystem was asked to run."""

    argv: list
    check: bool
    kwargs: dict


@dataclasses.dataclass(frozen=True)
class Answer:
    """What a scripted command returns (stream: stdout, line by line)."""

    returncode: int = 0
    stdout: str = ""
    stderr: str = ""


class Clock:
    """A wall clock and a monotonic one that move only when told."""

    def __init__(self, now=1000.0, tick=0.0):
        self.now = now              # clock(): the wall time
        self.mono = 0.0             # monotonic()
        self.tick = tick            # how far each monotonic() read moves it first
        self.slept = []

    def __call__(self):
        return self.now

    def monotonic(self):
        self.mono += self.tick
        return self.mono

    def advance(self, seconds):
        self.now += seconds
        self.mono += seconds

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.advance(seconds)


class FakeSystem(System):
    """results: {program name: Answer, or a list of Answers given in turn (the last
    repeats)}; a program not in it succeeds with no output."""

    def __init__(self, results=None, now=1000.0, tick=0.0, http=None):
        self.time = Clock(now, tick)
        super().__init__(clock=self.time, monotonic=self.time.monotonic, http=http or FakeHttp())
        self.results = dict(results or {})
        self.runs = []              # Ran, in order
        self.reboots = []           # (method, load argv or None)

    @property
    def ran(self):
        """The argv of every command asked for, in order."""
        return [r.argv for r in self.runs]

    def sleep(self, seconds):
        self.time.sleep(seconds)

    def which(self, name):
        return "/usr/bin/" + name

    def _answer(self, argv):
        answer = self.results.get(argv[0].rsplit("/", 1)[-1], Answer())
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        return answer

    def run(self, argv, *, check=True, **kwargs):
        argv = [str(a) for a in argv]
        self.runs.append(Ran(argv, check, kwargs))
        answer = self._answer(argv)
        if check and answer.returncode != 0:
            raise CommandFailed(argv, answer.returncode, answer.stderr)
        return subprocess.CompletedProcess(argv, answer.returncode, answer.stdout, answer.stderr)

    def stream(self, argv, on_line, env=None):
        argv = [str(a) for a in argv]
        self.runs.append(Ran(argv, True, {"env": env}))
        answer = self._answer(argv)
        for line in answer.stdout.splitlines():
            on_line(line)
        if answer.returncode != 0:
            raise CommandFailed(argv, answer.returncode, answer.stderr)
        return answer.returncode

    def reboot(self, method, load=None):
        self.reboots.append((method, load))
        super().reboot(method, load)


@dataclasses.dataclass(frozen=True)
class Response:
    """A canned answer: an HTTP status and body, or (error) an unreachable server."""

    status: int = 200
    body: bytes = b""
    headers: dict = dataclasses.field(default_factory=dict)
    error: str = ""                 # a URLError's reason: no answer at all


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: dict
    data: bytes
    timeout: float


class _Opened(io.BytesIO):
    """What urllib's opener returns: a readable context manager with headers."""

    def __init__(self, url, response):
        super().__init__(response.body)
        self.url, self.status = url, response.status
        self.headers = email.message.Message()
        for name, value in response.headers.items():
            self.headers[name] = value

    def getcode(self):
        return self.status


class FakeHttp:
    """responses: {url: Response, or a list given in turn (the last repeats)}; a URL
    not in it is unreachable. Records every request."""

    def __init__(self, responses=None):
        self.responses = dict(responses or {})
        self.requests = []

    def _response(self, url):
        response = self.responses.get(url, Response(error="no route to host"))
        if isinstance(response, list):
            response = response.pop(0) if len(response) > 1 else response[0]
        return response

    def open(self, request, timeout):
        url = request.full_url
        self.requests.append(Request(request.get_method(), url, dict(request.header_items()),
                                     request.data, timeout))
        response = self._response(url)
        if response.error:
            raise urllib.error.URLError(response.error)
        opened = _Opened(url, response)
        if response.status >= 400:
            raise urllib.error.HTTPError(url, response.status, "HTTP %d" % response.status,
                                         opened.headers, opened)
        return opened
