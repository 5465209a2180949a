"""The two kinds of failure the CLI tells apart (exit 2 and exit 1)."""


class AgentError(Exception):
    """Something failed; the message is one line an operator can act on."""

    exit_code = 1


class BadInput(AgentError):
    """Metadata, config or arguments are invalid; nothing was changed."""

    exit_code = 2


class Interrupted(AgentError):
    """A stop was asked for (SIGTERM); the work stopped where it was safe to."""


class CommandFailed(AgentError):
    """An external command exited non-zero."""

    def __init__(self, argv, returncode, stderr):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr or ""
        last = self.stderr.strip().splitlines()[-1:] or [""]
        super().__init__(
            "command %s exited %s: %s" % (" ".join(self.argv[:3]), returncode, last[0])
        )
