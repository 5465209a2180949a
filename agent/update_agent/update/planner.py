"""What comes before applying: trust, desired, facts, the staged image, the walk, the Plan.

The Planner reads and decides, it changes nothing on the root; the Agent takes
the locks and acts on what planned() yields.
"""

import contextlib
import dataclasses
import logging
import os
import posixpath

from update_agent import sources
from update_agent.apply import health, hooks
from update_agent.decide import accounts, changes, plan as planning
from update_agent.decide.sides import ImageSide, NodeSide, PlanOptions
from update_agent.errors import AgentError
from update_agent.images import formats, repo_image
from update_agent.node import facts as facts_mod, kept, manifest, processes, trust
from update_agent.node.paths import KEYS_DIR
from update_agent.reboot import steps as rebooting
from update_agent.sources import desired as desired_mod

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class Planned:
    plan: planning.Plan
    facts: facts_mod.Facts
    tree: str = ""
    image_entries: dict = None
    replan: object = None
    # a repository image: what the plan's change set fetches (decide.repo_fetch.FetchPlan):
    # still to fetch for a dry run, fetched already for an update
    fetch: object = None


@dataclasses.dataclass
class _Walk:
    """The node's side of an earlier plan in one planned() call, reused while the
    root provably has not changed since (token: facts_mod.unwritten_token)."""

    token: object = None
    entries: dict = None
    sigs: dict = None
    protected: object = None
    accounts: dict = None


class Planner:
    def __init__(self, paths, config, system, journal, records, images, read_mounts):
        """journal, records: the state dir's journal and image records (state.store)."""
        self.paths = paths
        self.config = config
        self.system = system
        self.journal = journal
        self.records = records
        self.images = images
        self.read_mounts = read_mounts
        self._open_images = 0

    def _closed_image(self):
        self._open_images -= 1

    def check_state_trust(self):
        """Refuse (trust.Untrusted) a state dir that anyone but root could write: its
        journal, cached images and work dir steer what the agent does as root."""
        state = self.paths.state_dir_node
        for node in (state, posixpath.join(state, "work"), posixpath.join(state, "images")):
            trust.check(self.paths.root, node, "state dir", missing_ok=True)

    def check_trust(self):
        """Before an update reads or changes anything: the state dir, the signature
        keys and every hook phase it may run must be trusted (trust.Untrusted)."""
        self.check_state_trust()
        keys = trust.check(self.paths.root, KEYS_DIR, "signature keys", missing_ok=True)
        for name in sorted(os.listdir(keys)) if os.path.isdir(keys) else ():
            if name.endswith(".pub"):  # what signature.load_keys reads, through the host's links
                judged = trust.check(self.paths.root, posixpath.join(KEYS_DIR, name), "signature key")
                trust.same_on_host(os.path.join(keys, name), judged, "signature key")
        for phase in hooks.PHASES + (rebooting.BOOTLOADER, health.PHASE):
            hooks.check_phase_dir(self.paths, phase)

    def desired(self, metadata_files=()):
        """What the node's metadata (or the given files) asks for."""
        return self.desired_of(sources.read_metadata(self.paths, metadata_files))

    def desired_of(self, metadata):
        """What metadata already read (the daemon's watch) asks for."""
        return desired_mod.from_metadata(metadata, self.config.agent.image_url_template)

    def rollout_policy(self, want):
        """The fleet rollout policy want comes with: the metadata's, else the config's
        policy file, else None."""
        path, text = self.config.rollout.policy_file, ""
        if want.rollout is None and path:
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read(1 << 20)
            except (OSError, UnicodeDecodeError) as e:
                raise AgentError("rollout policy file %s: %s" % (path, getattr(e, "strerror", e)))
        return desired_mod.rollout_of(want, text, path)

    def facts(self):
        return facts_mod.gather(self.paths, self.config.agent, self.read_mounts())

    def _early(self, want, adopt=False, rollback=False, force=False):
        """(facts, journal, rejected, the Plan if it needs no image, else None)."""
        facts = self.facts()
        j = rebooting.in_run_order(self.journal.load())
        # read here even when unused (--force ignores the rejections): damage stops the
        # update before the download, not when a failed health check must roll back
        self.records.load()
        rejected = self.records.rejected()
        rejected = {} if force or rollback else rejected
        return facts, j, rejected, planning.preflight(want, facts, j, adopt, rejected)

    def stage(self, want, adopt=False, rollback=False, force=False):
        """Download and verify the image, unless the plan needs none (None then).

        Called under the agent's lock only: a download may take long, and
        os-refresh-config must be free to run meanwhile."""
        facts, *_, early = self._early(want, adopt, rollback, force)
        if early is not None:
            return None
        staged = self.images.stage(want)
        if staged.format == repo_image.FORMAT:
            self._prefetch(staged, facts)
        return staged

    def _prefetch(self, staged, facts):
        """Fetch what the node lacks of a repository image, before os-refresh-config's
        lock is taken: the plan under the lock then finds it staged. From the change
        set of the walk now; the plan under the lock stages what changed since."""
        image = manifest.Excluder(facts.excluded).filter(self.images.manifest(staged, ""))
        token = facts_mod.unwritten_token(self.read_mounts(), facts.root)
        node, *_ = facts_mod.node_manifest(facts, self.paths.node_manifest, token, like=image)
        ch = changes.diff(node, image, skip=accounts.FILES)
        staging = self.images.staging(staged)
        rels = list(ch.transfer) + list(accounts.FILES)
        # before a byte comes: a full state dir must not be filled with half an update
        self.images.check_room(staging.room(rels))
        staging.fill(rels, _NodeFiles(facts.root, node))

    @contextlib.contextmanager
    def planned(self, want, adopt=False, rollback=False, force=False, staged=None, fetch=False):
        """Yield a Planned; the image stays open (mounted) inside the block.

        rollback: plan the return to the previous image (action rollback);
        force: apply an image even though it was rolled back from before;
        staged: the image stage() already fetched for want;
        fetch: stage a repository image's change set (else Planned.fetch only says
        what that would fetch: a dry run)."""
        self.check_trust()
        facts, j, rejected, early = self._early(want, adopt, rollback, force)
        if early is not None:
            yield Planned(early, facts)
            return
        staged = staged or self.images.stage(want)
        try:
            os.makedirs(self.paths.work_dir, mode=0o700, exist_ok=True)
        except OSError as e:
            raise AgentError("cannot make the work dir %s: %s" % (self.paths.work_dir, e.strerror))
        if not self._open_images:
            # what a killed run left; never what this run has open (a rollback plans
            # the previous image while the new one is still mounted)
            formats.cleanup(self.system, self.paths.work_dir, self.read_mounts())
        with contextlib.ExitStack() as stack:
            self._open_images += 1
            stack.callback(self._closed_image)
            tree = self._open(stack, staged)
            image = ImageSide(staged.digest, self.images.manifest(staged, tree),
                              keeps_replaced=staged.format == repo_image.FORMAT)
            options = PlanOptions(adopt=adopt, rollback=rollback, rejected=rejected)
            planned = Planned(None, facts, tree, image.entries)
            walk = _Walk()
            staging = self._staging(staged)

            def replan():
                # planned.facts become those the plan saw: the executor leaves the same
                # mounts alone, and a mount is reported once, when first seen
                planned.plan, planned.facts = self._decide(want, planned.facts, j, image, tree,
                                                           options, walk)
                if staging is not None:
                    planned.fetch = self._stage_plan(staging, planned, walk, fetch)
                return planned
            planned.replan = replan
            replan()
            yield planned

    def _staging(self, staged):
        """A repository image's Staging, its account files staged: the plan merges them."""
        if staged.format != repo_image.FORMAT:
            return None
        staging = self.images.staging(staged)
        staging.fill(accounts.FILES, {})
        return staging

    def _stage_plan(self, staging, planned, walk, fetch):
        ch = planned.plan.changes
        if ch is None or planned.plan.action in (planning.NOOP, planning.REFUSE):
            return staging.fetch_plan((), {})
        # and what an earlier update kept for a rollback
        files = _NodeFiles(planned.facts.root, walk.entries, kept.files(planned.facts.root))
        return (staging.fill if fetch else staging.fetch_plan)(ch.transfer, files)

    def _open(self, stack, staged):
        try:
            return stack.enter_context(
                formats.open_tree(staged.path, self.system, self.paths.work_dir))
        except AgentError:
            # a cached image that no longer opens may have been torn by a crash:
            # if it fails its digest, drop it so that the next attempt fetches it
            # again; if it is intact, the trouble is elsewhere (no loop device, say)
            if staged.format not in ("directory", repo_image.FORMAT) and \
                    not self.images.intact(staged):
                self.images.evict(staged)
            raise

    def _decide(self, want, facts, j, image, tree, options, walk):
        """walk: the node's side of an earlier plan in this planned() call, reused (and
        filled in) while the root provably has not changed since: the replan after
        pre-configure then costs a process scan, not a second walk of the whole root.
        Returns the plan and the facts, with the mounts as they are now."""
        mountinfo = self.read_mounts()
        # a pre-configure hook may have mounted a volume under the root: walk around it
        facts = facts_mod.with_current_mounts(facts, mountinfo)
        token = facts_mod.unwritten_token(mountinfo, facts.root)
        if token is not None and walk.token == token:
            LOG.info("the root was not written since it was walked: the walk is reused")
        else:
            self._walk(facts, tree, token, walk, image.entries)
        # read every time: /boot may be a filesystem of its own, which the token does not watch
        running_vmlinuz = facts_mod.running_vmlinuz(self.paths, facts.release,
                                                    planning.running_in_copy(facts, j))
        procs = processes.scan(facts.root)
        imports = {p.pid: processes.python_imports(p, self.paths.node) for p in procs}
        node = NodeSide(walk.entries, walk.accounts, walk.protected, running_vmlinuz,
                        walk.sigs, procs, imports, os.getpid())
        return planning.decide(want, facts, j, self.config, image, node, options), facts

    def _walk(self, facts, tree, token, walk, like):
        entries, sigs, protected, cached = facts_mod.node_manifest(facts, self.paths.node_manifest,
                                                                   token, like)
        saved = self._save_node_cache(entries, sigs, unchanged=cached)
        try:  # while the root stays read-only and unwritten, the next plan need not walk it
            facts_mod.save_unwritten(self.paths.node_manifest, token if saved else None,
                                     facts.excluded, protected)
        except OSError as e:
            LOG.debug("node manifest token not saved: %s", e)
        walk.token, walk.entries, walk.sigs, walk.protected = token, entries, sigs, protected
        walk.accounts = facts_mod.account_files(facts.root, tree, facts.excluded,
                                                self.paths.accounts_base)

    def _save_node_cache(self, entries, sigs, unchanged=False):
        try:
            if unchanged:
                # the same lines again: only the time their hashes stand for moves on
                os.utime(self.paths.node_manifest)
            else:
                manifest.save(self.paths.node_manifest, entries, sigs)
        except OSError as e:
            LOG.debug("node manifest cache not saved: %s", e)
            return False
        return True


class _NodeFiles:
    """{content hex: host path} of the node's files, where a moved file's bytes are, and
    of the files kept: each host path is made only when asked for (150,000 are MBs)."""

    def __init__(self, root, node_entries, kept_files=None):
        self.root, self.kept = root, kept_files or {}
        self.rels = {e.digest: rel for rel, e in node_entries.items()
                     if e.kind == "f" and e.size > 0}

    def __contains__(self, hexdigest):
        return hexdigest in self.rels or hexdigest in self.kept

    def __getitem__(self, hexdigest):
        rel = self.rels.get(hexdigest)
        return self.kept[hexdigest] if rel is None else os.path.join(self.root, rel)
