"""The values a journal's action, status, a step's state and an update's result take.

StrEnums: each member is its saved string, so the JSON on disk is what it always
was, and a string written by older code (or still assigned somewhere) compares
equal to its member.
"""

import enum

from update_agent.decide.actions import Action  # noqa: F401  (decide names it; state keeps it)
from update_agent.errors import AgentError


class Status(enum.StrEnum):
    """Where the update a journal records stands."""

    RUNNING = "running"          # started; steps run (or a crash stopped them)
    WAITING = "waiting"          # the reboot path waits for a fleet slot
    FAILED = "failed"            # a step failed
    INTERRUPTED = "interrupted"  # a stop was asked for between steps
    UNHEALTHY = "unhealthy"      # the health check after a reboot failed
    DONE = "done"
    SUPERSEDED = "superseded"    # an operator started over after a failed boot


class StepState(enum.StrEnum):
    PENDING = "pending"
    STARTED = "started"
    DONE = "done"


class Result(enum.StrEnum):
    """How one update ended: the history's result and the Outcome's."""

    SUCCESS = "success"
    NOOP = "noop"
    FAILED = "failed"
    REFUSED = "refused"
    REBOOT_REQUIRED = "reboot-required"
    REBOOTING = "rebooting"          # going down into the new kernel (or recorded so)
    WAITING = "waiting"              # for a fleet slot
    INTERRUPTED = "interrupted"
    ROLLED_BACK = "rolled-back"      # a health check failed; back on the previous image
    UNHEALTHY = "unhealthy"
    HALTED = "halted"                # a fleet rollout stops this node (halted, or it failed)


# an update that has not ended: the next run resumes it (or replaces it)
UNFINISHED = (Status.RUNNING, Status.WAITING, Status.FAILED, Status.INTERRUPTED, Status.UNHEALTHY)
# the results a failed step leaves as the journal's status, and those statuses
FAILURES = (Result.FAILED, Result.INTERRUPTED, Result.UNHEALTHY)
STOPPED = tuple(Status(result) for result in FAILURES)


class BadTransition(AgentError):
    """A journal (or one of its steps) was asked to move where its state does not
    allow: a bug, or a journal edited by hand."""

    def __init__(self, what, move, current, target, allowed):
        self.move, self.current, self.target, self.allowed = move, current, target, tuple(allowed)
        super().__init__("%s: cannot %s from %s to %s (only from %s)"
                         % (what, move, current, target, ", ".join(self.allowed)))
