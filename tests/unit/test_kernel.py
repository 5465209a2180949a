"""kernel: version order, symlinks in manifests, the image's kernel, the comparison."""

import pytest

from update_agent import kernel
from update_agent.kernel import ImageKernel, RunningKernel
from update_agent.manifest import Entry


def F(digest):
    return Entry("f", 0o644, 0, 0, 1, digest, "", "")


def D():
    return Entry("d", 0o755, 0, 0, 0, "", "", "")


def L(target):
    return Entry("l", 0o777, 0, 0, 0, target, "", "")


@pytest.mark.parametrize("older,newer", [
    ("6.1.0-9", "6.1.0-10"),
    ("6.1.0-9-amd64", "6.1.0-10-amd64"),
    ("5.10.0-28-amd64", "6.1.0-9-amd64"),
    ("6.1", "6.1.0"),
    ("6.2.0", "6.10.0"),
])
def test_version_key_orders_like_sort_v(older, newer):
    assert kernel.version_key(older) < kernel.version_key(newer)


def test_kernel_versions_are_sorted_by_version():
    entries = {"boot/vmlinuz-" + v: F(v) for v in ("6.1.0-10", "6.1.0-9", "5.10.0-1")}
    entries["boot/grub/vmlinuz-9"] = F("not a kernel")
    assert kernel.kernel_versions(entries) == ["5.10.0-1", "6.1.0-9", "6.1.0-10"]


@pytest.mark.parametrize("target", ["usr/lib", "/usr/lib"])
def test_resolve_follows_lib_to_usr_lib(target):
    entries = {"lib": L(target), "usr": D(), "usr/lib": D()}
    assert kernel.resolve(entries, "lib/modules/6.1.0-9") == "usr/lib/modules/6.1.0-9"


def test_resolve_follows_chained_relative_links():
    entries = {"boot/vmlinuz": L("vmlinuz-6.1"), "boot/vmlinuz-6.1": L("../k/6.1"), "k/6.1": F("x")}
    assert kernel.resolve(entries, "boot/vmlinuz") == "k/6.1"


def test_resolve_does_not_climb_above_the_root():
    entries = {"lib": L("../../usr/lib")}
    assert kernel.resolve(entries, "lib/modules") == "usr/lib/modules"


def tree(*versions, link=None):
    entries = {"boot": D(), "lib": L("usr/lib"), "usr/lib/modules": D()}
    for v in versions:
        entries["boot/vmlinuz-" + v] = F("vmlinuz " + v)
        entries["usr/lib/modules/%s/ext4.ko" % v] = F("ext4 " + v)
    if link:
        entries[link[0]] = L(link[1])
    return entries


@pytest.mark.parametrize("link", [("vmlinuz", "boot/vmlinuz-6.1.0-9"),
                                  ("boot/vmlinuz", "vmlinuz-6.1.0-9")])
def test_vmlinuz_link_wins_over_newest(link):
    k = kernel.image_kernel(tree("6.1.0-9", "6.1.0-10", link=link))
    assert k.version == "6.1.0-9"
    assert link[0] in k.chosen_by
    assert k.vmlinuz == "vmlinuz 6.1.0-9"
    assert k.modules != ""


def test_without_link_the_newest_kernel_is_chosen():
    k = kernel.image_kernel(tree("6.1.0-9", "6.1.0-10"))
    assert k.version == "6.1.0-10"
    assert "newest of 2" in k.chosen_by


def test_link_to_a_missing_kernel_falls_back_to_newest():
    k = kernel.image_kernel(tree("6.1.0-9", "6.1.0-10", link=("vmlinuz", "boot/vmlinuz-7.0")))
    assert k.version == "6.1.0-10"


def test_image_without_kernel_has_empty_version():
    k = kernel.image_kernel({"etc": D()})
    assert k.version == "" and k.vmlinuz == "" and k.modules == ""
    same, reasons = kernel.compare(RunningKernel("6.1.0-9", "v", "m"), k)
    assert not same and "no kernel" in reasons[0]


def test_modules_digest_depends_on_module_content():
    a, b = tree("6.1.0-9"), tree("6.1.0-9")
    b["usr/lib/modules/6.1.0-9/ext4.ko"] = F("rebuilt")
    assert kernel.modules_digest(a, "6.1.0-9") != kernel.modules_digest(b, "6.1.0-9")
    assert kernel.modules_digest(a, "6.1.0-9") == kernel.modules_digest(tree("6.1.0-9"), "6.1.0-9")


def test_running_kernel_identical_to_image_kernel_is_same():
    node = tree("6.1.0-9")
    same, reasons = kernel.compare(kernel.running_kernel("6.1.0-9", node),
                                   kernel.image_kernel(tree("6.1.0-9")))
    assert same
    assert "same vmlinuz and modules" in reasons[-1]


def test_same_name_different_vmlinuz_is_not_same():
    running = RunningKernel("6.1.0-9", "build-1", "mods")
    same, reasons = kernel.compare(running, ImageKernel("6.1.0-9", "only kernel", "build-2", "mods"))
    assert not same
    assert "different vmlinuz" in reasons[0]


def test_different_modules_is_not_same():
    running = RunningKernel("6.1.0-9", "build-1", "mods-1")
    same, reasons = kernel.compare(running, ImageKernel("6.1.0-9", "only kernel", "build-1", "mods-2"))
    assert not same
    assert "modules" in reasons[0]


def test_different_name_is_not_same():
    same, reasons = kernel.compare(RunningKernel("6.1.0-9", "v", "m"),
                                   ImageKernel("6.1.0-10", "only kernel", "v", "m"))
    assert not same
    assert "6.1.0-10" in reasons[0] and "6.1.0-9" in reasons[0]


def test_node_without_vmlinuz_compares_by_name_and_modules():
    image = ImageKernel("6.1.0-9", "only kernel", "build-2", "mods")
    same, reasons = kernel.compare(RunningKernel("6.1.0-9", "", "mods"), image)
    assert same
    assert "compared by name and modules" in reasons[0]
    same, _ = kernel.compare(RunningKernel("6.1.0-9", "", "other"), image)
    assert not same
