"""The agent's state dir, by job: each consumer takes the part it uses."""

from update_agent.state.flags import Flags
from update_agent.state.history import History
from update_agent.state.journal import JournalFile
from update_agent.state.records import ImageRecords


class Store:
    def __init__(self, state_dir):
        self.state_dir = state_dir
        self.journal = JournalFile(state_dir)     # journal.json
        self.records = ImageRecords(state_dir)    # images.json, rejected.json
        self.history = History(state_dir)         # history.jsonl, changes/
        self.flags = Flags(state_dir)             # hold.json, deployments.json, status.json
