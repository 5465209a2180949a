"""accounts.merge: image entries win, node additions survive, clashes refused."""

import pytest

from update_agent.decide.accounts import AccountClash, merge

ROOT = "root:x:0:0:root:/root:/bin/bash\n"
SSHD = "sshd:x:105:65534::/run/sshd:/usr/sbin/nologin\n"
ALICE = "alice:x:1001:1001::/home/alice:/bin/bash\n"


def test_image_entries_replace_node_ones_and_node_users_are_kept():
    node = "root:x:0:0:root:/root:/bin/sh\n" + ALICE
    image = ROOT + SSHD
    assert merge("etc/passwd", node, image) == ROOT + SSHD + ALICE


def test_members_the_node_added_to_an_image_group_are_kept():
    node = "sudo:x:27:alice\nadm:x:4:syslog,alice\nalice:x:1001:\n"
    image = "sudo:x:27:\nadm:x:4:syslog,admin\n"
    assert merge("etc/group", node, image) == \
        "sudo:x:27:alice\nadm:x:4:syslog,admin,alice\nalice:x:1001:\n"


def test_gshadow_members_are_merged_by_name():
    node = "sudo:*::alice\n"
    image = "sudo:!::bob\n"
    assert merge("etc/gshadow", node, image) == "sudo:!::bob,alice\n"


def test_uid_clash_between_node_user_and_image_user_is_refused():
    image = ROOT + "bob:x:1001:1001::/home/bob:/bin/sh\n"
    with pytest.raises(AccountClash) as err:
        merge("etc/passwd", ROOT + ALICE, image)
    msg = str(err.value)
    assert "'alice'" in msg and "'bob'" in msg and "1001" in msg


def test_gid_clash_is_refused():
    with pytest.raises(AccountClash, match="'staff'.*'devs'.*50"):
        merge("etc/group", "staff:x:50:\n", "devs:x:50:\n")


def test_same_name_with_different_id_is_refused():
    with pytest.raises(AccountClash) as err:
        merge("etc/passwd", ROOT + "sshd:x:110:65534::/run/sshd:/bin/false\n", ROOT + SSHD)
    msg = str(err.value)
    assert "'sshd'" in msg and "110" in msg and "105" in msg


def test_shadow_is_merged_by_name_without_id_checks():
    node = "root:$6$node:19000:0:99999:7:::\nalice:$6$a:19000:0:99999:7:::\n"
    image = "root:*:19500:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
    # equal third fields would be an id clash in passwd; shadow has no ids
    assert merge("etc/shadow", node, image) == image + "alice:$6$a:19000:0:99999:7:::\n"


def test_three_way_merge_drops_what_the_new_image_dropped():
    base = "root:x:0:0::/root:/bin/sh\n_apt:x:100:65534::/nonexistent:/usr/sbin/nologin\n"
    image = "root:x:0:0::/root:/bin/sh\nsystemd-network:x:100:102::/run:/usr/sbin/nologin\n"
    node = base + "operator:x:1001:1001::/home/operator:/bin/sh\n"
    merged = merge("etc/passwd", node, image, base)
    names = [line.split(":")[0] for line in merged.splitlines()]
    assert names == ["root", "systemd-network", "operator"]
    # without the base, _apt looks node-added and its uid clashes with the image's
    with pytest.raises(AccountClash):
        merge("etc/passwd", node, image)
