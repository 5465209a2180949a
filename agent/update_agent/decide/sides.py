"""What decide() weighs, grouped: the image's side, the node's side, the switches.

Plain frozen values, so a test (or --dry-run) builds exactly what an update sees.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class ImageSide:
    """What the image offers."""

    digest: str
    entries: dict                 # {rel: Entry}: the image's whole manifest
    # a repository image: what the sync replaces or deletes is kept for a rollback
    # without download (rollback_keep.py)
    keeps_replaced: bool = False


@dataclasses.dataclass(frozen=True)
class NodeSide:
    """The node as walked and as running now.

    protected: node paths the walk excluded (preserved, mount points) that exist;
    a directory holding one is never deleted or replaced (None: the excluded
    patterns that name a single path).
    running_vmlinuz: digest of the node's running vmlinuz when read apart from the
    walk (/boot on its own partition).
    sigs, procs, imports, agent_pid: the inodes of the node's files and the running
    processes, for predicting what must restart.
    """

    entries: dict                 # {rel: Entry}: the node's walked manifest
    # {rel: (node_text, image_text[, base_text])}: the account files to merge
    accounts: dict = dataclasses.field(default_factory=dict)
    protected: object = None
    running_vmlinuz: str = None
    sigs: dict = None
    procs: tuple = ()
    imports: dict = None
    agent_pid: int = None


@dataclasses.dataclass(frozen=True)
class PlanOptions:
    """The switches of one plan.

    adopt: take over a root that has no /etc/image_id;
    rollback: the plan returns to the previous image (action rollback);
    rejected: {image_id: {"why", ...}} images rolled back from, not applied again
    (empty under --force)."""

    adopt: bool = False
    rollback: bool = False
    rejected: dict = None
