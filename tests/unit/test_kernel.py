"""kernel: version order, symlinks in manifests, the image's kernel, the comparison."""

import pytest

from update_agent.decide import kernel
from update_agent.decide.kernel import ImageKernel, RunningKernel
from update_agent.node.manifest import Entry


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


R = "6.1.0-26-amd64"
PREV = R + ".update-agent-prev"


def node_boot(release=R, initrd=True):
    entries = {"boot/vmlinuz-" + release: F("build-1")}
    if initrd:
        entries["boot/initrd.img-" + release] = F("initrd-1")
    return entries


def running(vmlinuz="build-1", modules="mods-1", release=R):
    return RunningKernel(release, vmlinuz, modules)


def image(vmlinuz="build-2", modules="mods-1", release=R):
    return ImageKernel(release, "only kernel", vmlinuz, modules)


@pytest.mark.parametrize("cmdline, booted", [
    ("BOOT_IMAGE=/boot/vmlinuz-%s root=UUID=1 ro quiet" % R, "vmlinuz-" + R),
    ("BOOT_IMAGE=/vmlinuz-%s root=/dev/vda1" % PREV, "vmlinuz-" + PREV),   # /boot on its own
    ("BOOT_IMAGE=(hd0,msdos1)/boot/vmlinuz-%s ro\n" % R, "vmlinuz-" + R),
    ("root=/dev/vda1 ro console=ttyS0\n", ""),                             # not GRUB
    ("", ""),
])
def test_boot_image_is_the_file_the_boot_loader_named(cmdline, booted):
    assert kernel.boot_image(cmdline) == booted
    assert kernel.booted_fallback(R, booted) == booted.endswith(".update-agent-prev")


def test_a_same_name_rebuild_copies_the_running_build_under_a_name_of_its_own():
    fb = kernel.fallback(running(), image(), node_boot())
    assert fb.kernel == PREV
    assert fb.copies == (("boot/vmlinuz-" + R, "boot/vmlinuz-" + PREV),
                         ("boot/initrd.img-" + R, "boot/initrd.img-" + PREV))
    assert fb.kept == ("boot/vmlinuz-" + PREV, "boot/initrd.img-" + PREV)


def test_the_copy_is_named_as_grubs_10_linux_pairs_a_kernel_with_its_initrd():
    """10_linux takes the version from the text after "vmlinuz-" and boots the entry
    with initrd.img-<that version>: the copy's initrd must carry the same version."""
    vmlinuz, initrd = kernel.fallback_paths(R)
    version = vmlinuz[len("boot/vmlinuz-"):]
    assert initrd == "boot/initrd.img-" + version and version != R
    assert not version.endswith((".dpkg-new", ".rpmsave", ".rpmnew", ".sig"))  # not "garbage"


def test_modules_rebuilt_under_the_same_vmlinuz_get_a_fallback_too():
    fb = kernel.fallback(running(), image(vmlinuz="build-1", modules="mods-2"), node_boot())
    assert fb.kernel == PREV and len(fb.copies) == 2


def test_a_running_build_without_an_initrd_is_copied_alone():
    fb = kernel.fallback(running(), image(), node_boot(initrd=False))
    assert fb.copies == (("boot/vmlinuz-" + R, "boot/vmlinuz-" + PREV),)


@pytest.mark.parametrize("img", [image(release="6.1.0-27-amd64"), image(vmlinuz="build-1")])
def test_another_kernel_name_or_the_same_build_needs_no_copy(img):
    fb = kernel.fallback(running(), img, node_boot())
    assert fb == kernel.Fallback(kernel=R)


def test_no_vmlinuz_in_the_walk_means_no_copy():
    # /boot on its own partition is not walked, so the sync does not replace it
    fb = kernel.fallback(running(), image(), {"boot/initrd.img-" + R: F("initrd-1")})
    assert fb == kernel.Fallback(kernel=R)


@pytest.mark.parametrize("img", [image(), image(release="6.1.0-27-amd64"), image(vmlinuz="build-1")])
def test_a_node_that_runs_the_copy_keeps_it_as_the_fallback_whatever_the_image(img):
    """The last same-name update came back on the copy (or has not rebooted yet):
    /boot/vmlinuz-<R> is another build, the copy the one that runs; it is not copied
    over, and it stays."""
    fb = kernel.fallback(running(), img, node_boot(), on_copy=True)
    assert fb.kernel == PREV and fb.copies == ()
    assert fb.kept == ("boot/vmlinuz-" + PREV, "boot/initrd.img-" + PREV)
