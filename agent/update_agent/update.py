"""One update, as data flowing through the agent:

metadata -> Desired -> staged image -> manifests + facts -> Plan -> apply -> record.

The CLI (and later the daemon) wires these together; each stage lives in its
own module and the decision in plan.py stays pure.
"""

import contextlib
import dataclasses
import logging
import os

from update_agent import apply as applying
from update_agent import desired as desired_mod
from update_agent import facts as facts_mod
from update_agent import journal, locks, manifest, mounts, plan as planning, sources
from update_agent.images import formats
from update_agent.images.store import ImageStore

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class Planned:
    plan: planning.Plan
    facts: facts_mod.Facts
    tree: str = ""
    image_entries: dict = None


class Agent:
    def __init__(self, paths, config, system, opener=None, read_mounts=mounts.read):
        self.paths = paths
        self.config = config
        self.system = system
        self.read_mounts = read_mounts
        self.state = journal.Store(paths.state_dir)
        self.images = ImageStore(paths.images_dir, config, system, opener=opener)

    def desired(self, metadata_files=()):
        metadata = sources.read_metadata(self.paths, metadata_files)
        return desired_mod.from_metadata(metadata, self.config.image_url_template)

    def facts(self):
        return facts_mod.gather(self.paths, self.config, self.read_mounts())

    @contextlib.contextmanager
    def planned(self, want, adopt=False):
        """Yield a Planned; the image stays open (mounted) inside the block."""
        facts = self.facts()
        j = self.state.load_journal()
        early = planning.preflight(want, facts, j, adopt)
        if early is not None:
            yield Planned(early, facts)
            return
        staged = self.images.stage(want)
        os.makedirs(self.paths.work_dir, mode=0o700, exist_ok=True)
        with formats.open_tree(staged.path, self.system, self.paths.work_dir) as tree:
            image_entries = self.images.manifest(staged, tree)
            node_entries, sigs, protected = facts_mod.node_manifest(facts, self.paths.node_manifest)
            self._save_node_cache(node_entries, sigs)
            account_texts = facts_mod.account_files(facts.root, tree)
            plan = planning.decide(want, facts, j, self.config, staged.digest, node_entries,
                                   image_entries, account_texts, adopt, protected)
            yield Planned(plan, facts, tree, image_entries)

    def _save_node_cache(self, entries, sigs):
        try:
            manifest.save(self.paths.node_manifest, entries, sigs)
        except OSError as e:
            LOG.debug("node manifest cache not saved: %s", e)

    def lock(self):
        return locks.flock(self.paths.agent_lock, "update-agent")

    def apply(self, planned):
        executor = applying.Executor(self.system, self.paths, self.config, self.state,
                                     self.images, read_mounts=self.read_mounts)
        return executor.apply(planned.plan, planned.facts, planned.tree, planned.image_entries)
