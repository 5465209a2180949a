"""Small state files: the operator's hold, the Heat deployments done, and the
daemon's last status."""

import logging
import os

from update_agent.state import statecheck, statefile
from update_agent.state.statecheck import DamagedState

LOG = logging.getLogger(__name__)

DEPLOYMENTS_FIX = ("it lists the Heat deployments done: repair it by hand, or move it aside "
                   "and the deployments in the metadata are applied and signalled again")
HOLD_FIX = "treated as held: `update-agent unhold` removes it"
STATUS_FIX = "ignored: the next run writes it again"


class Flags:
    def __init__(self, state_dir):
        self.hold_path = os.path.join(state_dir, "hold.json")
        self.deployments_path = os.path.join(state_dir, "deployments.json")
        self.status_path = os.path.join(state_dir, "status.json")

    def hold(self):
        """{'reason', 'since'} when automatic updates are held, else None. A damaged
        hold.json holds: someone meant to stop the updates."""
        try:
            return statecheck.load(self.hold_path, statecheck.HOLD, HOLD_FIX, None)
        except DamagedState as e:
            LOG.warning("%s", e)
            why = "%s: %s" % (e.field, e.wrong) if e.field else e.wrong
            return {"reason": "hold.json is damaged (%s); %s" % (why, HOLD_FIX), "since": None}

    def set_hold(self, reason, since):
        statefile.write_json(self.hold_path, {"reason": reason, "since": since})

    def clear_hold(self):
        try:
            os.unlink(self.hold_path)
            return True
        except FileNotFoundError:
            return False

    def deployments_done(self):
        """A decision: refused when damaged (read as empty, it would run them again)."""
        return statecheck.load(self.deployments_path, statecheck.DEPLOYMENTS, DEPLOYMENTS_FIX, {})

    def mark_deployment_done(self, key, record):
        done = self.deployments_done()
        done[key] = record
        statefile.write_json(self.deployments_path, done)

    def save_status(self, status):
        statefile.write_json(self.status_path, status)

    def load_status(self):
        return statecheck.load_or_warn(self.status_path, statecheck.STATUS, STATUS_FIX, {})
