"""The image records: what the node has committed (images.json) and the images
rolled back from (rejected.json), which are not applied again."""

import os

from update_agent.state import statecheck, statefile

STATE_FILE = "images.json"
STATE_FIX = ("move it aside: the next commit writes it again, but until then no previous "
             "image is known to roll back to")
REJECTED_FIX = ("it lists the images not applied again: repair it by hand, or move it aside "
                "to forget those rejections")


class ImageRecords:
    def __init__(self, state_dir):
        self.path = os.path.join(state_dir, STATE_FILE)
        self.rejected_path = os.path.join(state_dir, "rejected.json")

    def load(self):
        """{'current': {'image_id', 'digest'}, 'previous': {...}} as committed.

        A damaged file is refused, not rebuilt from /etc/image_id: that gives the
        current image's id but not the previous one, and an update that went on
        would lose, unsaid, the rollback a failed health check relies on."""
        return statecheck.load(self.path, statecheck.IMAGE_STATE, STATE_FIX, missing={})

    def commit(self, image_id, digest, previous_image_id="", previous_digest=""):
        state = self.load()
        current = state.get("current") or {}
        if current.get("image_id") not in (None, image_id):
            state["previous"] = current
        elif previous_image_id and previous_image_id != image_id:
            state["previous"] = {"image_id": previous_image_id, "digest": previous_digest}
        state["current"] = {"image_id": image_id, "digest": digest}
        statefile.write_json(self.path, state)

    def rejected(self):
        """{image_id: {"digest", "why", "at"}}: images rolled back from; not applied again.
        A damaged file is refused: read as empty, it would re-apply a rolled-back image."""
        return statecheck.load(self.rejected_path, statecheck.REJECTED, REJECTED_FIX, {})

    def reject(self, image_id, digest, why, at):
        data = self.rejected()
        data[image_id] = {"digest": digest, "why": why, "at": at}
        statefile.write_json(self.rejected_path, data)

    def unreject(self, image_id):
        data = self.rejected()
        if data.pop(image_id, None) is not None:
            statefile.write_json(self.rejected_path, data)
