"""The node's own paths (preserved paths, the merged account files) keep their type:
an image that changes one, or a directory above one, is refused at plan time."""

import pytest

from update_agent.decide import plan
from update_agent.decide.sides import ImageSide, NodeSide
from update_agent.decide.changes import too_long, type_conflicts
from update_agent.config import AgentConfig, Config
from update_agent.sources.desired import Desired
from update_agent.node.facts import Facts
from update_agent.node.manifest import Entry

KV = "6.1.0-9-amd64"
DESIRED = Desired("img-2", "https://images/img-2.qcow2", "")
PRESERVE = ("/etc/image_id", "/etc/hostname", "/etc/ssh/ssh_host_*", "/root", "/var/log")
CONFIG = Config(agent=AgentConfig(free_space_margin=1000, preserve=PRESERVE))
ACCOUNTS = ("etc/passwd", "etc/shadow")


def F(digest="x", size=10):
    return Entry("f", 0o644, 0, 0, size, digest, "", "")


def D():
    return Entry("d", 0o755, 0, 0, 0, "", "", "")


def L(target):
    return Entry("l", 0o777, 0, 0, 0, target, "", "")


def N(kind):
    return Entry(kind, 0o600, 0, 0, 0, "1,3" if kind in "cb" else "", "", "")


def facts():
    return Facts(root="/", release=KV, root_is_mount_point=True, root_read_only=False,
                 root_fstype="ext4", state_dir="/var/lib/update-agent", state_on_root_fs=False,
                 state_read_only=False, free_bytes=10**9, mount_points=(), current_image_id="img-1",
                 excluded=PRESERVE + ("/var/lib/update-agent",))


def base():
    """The image both sides share, the excluded paths left out (as a walk leaves them)."""
    return {"etc": D(), "etc/ssh": D(), "etc/ssh/sshd_config": F("cfg"), "etc/passwd": F("pw"),
            "etc/shadow": F("sh"), "var": D(), "var/lib": D(), "boot/vmlinuz-" + KV: F("k", 100),
            "usr": D(), "usr/bin": D(), "usr/bin/app": F("app-1")}


# what the node's walk left out, and as what
NODE_KEPT = {"etc/image_id": "f", "etc/hostname": "f", "etc/ssh/ssh_host_ed25519_key": "f",
             "root": "d", "var/log": "d", "var/lib/update-agent": "l"}


def decide(image_edit, node_kept=None):
    node = base()
    image = dict(base(), **{"usr/bin/app": F("app-2"), "etc/image_id": F("id"),
                            "etc/hostname": F("h"), "etc/ssh/ssh_host_ed25519_key": F("key"),
                            "root": D(), "var/log": D(), "var/lib/update-agent": D()})
    image_edit(image)
    accounts = {rel: ("", "", None) for rel in ACCOUNTS if image.get(rel, D()).kind == "f"}
    return plan.decide(DESIRED, facts(), None, CONFIG, ImageSide("sha256:abc", image),
                       NodeSide(node, accounts,
                                protected=dict(NODE_KEPT if node_kept is None else node_kept)))


def refused_naming(p, path, *words):
    assert p.action == plan.REFUSE, p.reasons
    hits = [r for r in p.reasons if path in r]
    assert hits, p.reasons
    for word in words:
        assert any(word in r for r in hits), hits


def test_an_image_that_keeps_every_type_is_applied():
    p = decide(lambda image: None)
    assert p.action == plan.IN_PLACE, p.reasons
    assert p.changes.changed == ("usr/bin/app",)


def test_a_symlinked_state_dir_on_the_node_is_no_conflict():
    # the agent's own state dir may be a link on the node: it is not a preserved path
    assert NODE_KEPT["var/lib/update-agent"] == "l"
    assert decide(lambda image: None).action == plan.IN_PLACE


def _replace(rel, entry, children=()):
    def edit(image):
        image[rel] = entry
        for child in children:
            image[rel + "/" + child] = F("intruder")
    return edit


ACCOUNT_CASES = [
    ("shadow as a directory with a child", "etc/shadow", _replace("etc/shadow", D(), ["x"]), "directory"),
    ("passwd as a directory", "etc/passwd", _replace("etc/passwd", D()), "directory"),
    ("shadow as a symlink elsewhere", "etc/shadow", _replace("etc/shadow", L("/tmp/shadow")), "symlink"),
    ("shadow as a relative symlink", "etc/shadow", _replace("etc/shadow", L("../tmp/s")), "symlink"),
    ("passwd as a fifo", "etc/passwd", _replace("etc/passwd", N("p")), "fifo"),
    ("shadow as a character device", "etc/shadow", _replace("etc/shadow", N("c")), "character device"),
]


@pytest.mark.parametrize("name, path, edit, word", ACCOUNT_CASES, ids=[c[0] for c in ACCOUNT_CASES])
def test_an_account_file_of_another_type_is_refused(name, path, edit, word):
    p = decide(edit)
    refused_naming(p, "/" + path, word, "regular file")
    assert not p.accounts


PRESERVED_CASES = [
    ("hostname as a directory", "etc/hostname", _replace("etc/hostname", D(), ["a"]), "directory"),
    ("hostname as a symlink", "etc/hostname", _replace("etc/hostname", L("/proc/sys/kernel/hostname")),
     "symlink"),
    ("host key as a block device", "etc/ssh/ssh_host_ed25519_key",
     _replace("etc/ssh/ssh_host_ed25519_key", N("b")), "block device"),
    ("host key as a fifo", "etc/ssh/ssh_host_ed25519_key",
     _replace("etc/ssh/ssh_host_ed25519_key", N("p")), "fifo"),
    ("image_id as a directory", "etc/image_id", _replace("etc/image_id", D()), "directory"),
    ("/root as a file", "root", _replace("root", F("r")), "file"),
    ("/var/log as a symlink", "var/log", _replace("var/log", L("/tmp")), "symlink"),
]


@pytest.mark.parametrize("name, path, edit, word", PRESERVED_CASES,
                         ids=[c[0] for c in PRESERVED_CASES])
def test_a_preserved_path_of_another_type_is_refused(name, path, edit, word):
    refused_naming(decide(edit), "/" + path, word, "keep their type")


PARENT_CASES = [
    ("etc/ssh as a symlink", "etc/ssh", _replace("etc/ssh", L("/tmp"))),
    ("etc/ssh as a file", "etc/ssh", _replace("etc/ssh", F("s"))),
    ("var as a symlink", "var", _replace("var", L("/srv"))),
    ("etc as a symlink", "etc", _replace("etc", L("/tmp/etc"))),
]


@pytest.mark.parametrize("name, path, edit", PARENT_CASES, ids=[c[0] for c in PARENT_CASES])
def test_a_directory_above_a_kept_path_turned_into_another_type_is_refused(name, path, edit):
    refused_naming(decide(edit), "/" + path, "holds")


def test_the_directory_above_the_account_files_is_guarded_too():
    # no preserved path below /etc on this node: the account files alone hold it
    kept = {k: v for k, v in NODE_KEPT.items() if not k.startswith("etc/")}
    refused_naming(decide(_replace("etc", L("/tmp/etc")), node_kept=kept), "/etc", "holds")


def test_a_node_account_file_that_is_a_symlink_is_refused():
    # the merge would read nothing through it and replace it: the node is not guessed at
    node_kept = dict(NODE_KEPT)
    p = plan.decide(DESIRED, facts(), None, CONFIG, ImageSide("sha256:abc", base()),
                    NodeSide(dict(base(), **{"etc/shadow": L("/srv/shadow")}),
                             {"etc/shadow": ("", "", None)}, protected=node_kept))
    refused_naming(p, "/etc/shadow", "a symlink on the node", "into a file")


def test_a_kept_path_the_node_lacks_stays_absent_whatever_its_type():
    node_kept = {k: v for k, v in NODE_KEPT.items() if k != "etc/hostname"}
    p = decide(_replace("etc/hostname", D(), ["x"]), node_kept=node_kept)
    assert p.action == plan.IN_PLACE, p.reasons
    assert not any("hostname" in r for r in p.changes.transfer)
    assert any("absent on the node" in r and "/etc/hostname" in r for r in p.reasons)


def test_type_conflicts_alone():
    image = {"etc/shadow": D(), "etc/shadow/x": F(), "root": F(), "etc/hostname": F()}
    out = type_conflicts({"etc/shadow": "f", "root": "d", "etc/hostname": "f"}, image,
                         files=("etc/shadow",))
    assert len(out) == 2, out  # shadow once (as an account file), /root; hostname is fine
    assert "/etc/shadow as a directory" in out[0] and "/root" in out[1]
    assert type_conflicts({"etc/hostname": None}, {"etc/hostname": D()}) == []


def test_names_with_control_characters_stay_on_one_line():
    out = type_conflicts({"etc/a\nb": "f"}, {"etc/a\nb": D()})
    assert out and "\n" not in out[0] and "/etc/a\\nb" in out[0]


# --- paths longer than the system allows ---------------------------------------

def test_paths_within_the_limits_pass():
    deep = "/".join(["d" * 254] * 15)  # 3824 bytes
    assert too_long({"a" * 255: F(), deep: F(), ("é" * 127): F()}) == []


@pytest.mark.parametrize("rel", ["a" * 256, "usr/" + "b" * 300 + "/c", "é" * 128,
                                 "/".join(["d" * 200] * 21)])
def test_a_path_over_the_limits_is_named(rel):
    out = too_long({"usr": D(), rel: F()})
    assert len(out) == 1 and "/" + rel[:40] in out[0] and "\n" not in out[0]


def test_a_path_over_the_limits_refuses_the_plan():
    p = decide(_replace("usr/" + "n" * 256, F()))
    refused_naming(p, "/usr/nnnn", "longer than the system allows")


def test_the_whole_path_counts_its_slash_and_nul():
    rel = "x/" * 2047 + "y"   # 4095 bytes: '/' + rel + NUL is 4097, one more than PATH_MAX
    assert len(rel) == 4095 and too_long({rel: F()})
    assert too_long({rel[:-2]: F()}) == []
