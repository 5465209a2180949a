"""What a plan does: its action, which the journal and the history keep as a string.

Here, in the lowest layer, so that decide names them and state re-exports them
(state.states.Action); each member is its saved string.
"""

import enum


class Action(enum.StrEnum):
    NOOP = "noop"
    IN_PLACE = "in-place"
    ROLLBACK = "rollback"    # an in-place update back to the previous image
    REBOOT = "reboot"
    REFUSE = "refuse"
