"""Pure: which kernel an image boots, and whether it is the running one.

Debian keeps one version name (6.1.0-56-amd64) across several builds, so the
comparison is by content too: the vmlinuz bytes and the module tree.
"""

import dataclasses
import hashlib
import posixpath
import re

LINKS = ("vmlinuz", "boot/vmlinuz")


def version_key(version):
    """Order versions like 'sort -V': numbers numerically, the rest as text."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", version) if p]


def resolve(entries, rel, limit=20):
    """Follow symlinks inside a manifest (paths relative to its root)."""
    parts = [p for p in rel.split("/") if p]
    done = []
    while parts and limit:
        done.append(parts.pop(0))
        cur = "/".join(done)
        e = entries.get(cur)
        if e is not None and e.kind == "l":
            limit -= 1
            target = e.digest
            base = [] if target.startswith("/") else done[:-1]
            # normalised as an absolute path, so '..' stops at the root (as in a chroot)
            joined = posixpath.normpath("/" + "/".join(base + [target]))
            parts = [p for p in joined.split("/") if p] + parts
            done = []
    return "/".join(done)


def kernel_versions(entries):
    out = []
    for rel in entries:
        if rel.startswith("boot/vmlinuz-") and "/" not in rel[5:]:
            out.append(rel[len("boot/vmlinuz-"):])
    return sorted(out, key=version_key)


def modules_digest(entries, version):
    """A digest of the module tree of one kernel version ('' if absent)."""
    base = resolve(entries, "lib/modules/" + version)
    prefix = base + "/"
    rows = sorted("%s %s %s" % (rel[len(prefix):], e.kind, e.digest)
                  for rel, e in entries.items() if rel.startswith(prefix))
    if not rows:
        return ""
    return hashlib.sha256("\n".join(rows).encode("utf-8", "surrogateescape")).hexdigest()


def vmlinuz_digest(entries, version):
    e = entries.get(resolve(entries, "boot/vmlinuz-" + version))
    return e.digest if e is not None and e.kind == "f" else ""


@dataclasses.dataclass(frozen=True)
class ImageKernel:
    version: str      # "" if the image has no kernel
    chosen_by: str
    vmlinuz: str
    modules: str


def image_kernel(entries):
    """The kernel the image boots: the vmlinuz link's target, else the newest."""
    versions = kernel_versions(entries)
    for link in LINKS:
        e = entries.get(link)
        if e is not None and e.kind == "l":
            name = posixpath.basename(e.digest)
            if name.startswith("vmlinuz-") and name[len("vmlinuz-"):] in versions:
                v = name[len("vmlinuz-"):]
                return ImageKernel(v, "/%s -> %s" % (link, e.digest),
                                   vmlinuz_digest(entries, v), modules_digest(entries, v))
    if not versions:
        return ImageKernel("", "no /boot/vmlinuz-* in image", "", "")
    v = versions[-1]
    how = "only kernel" if len(versions) == 1 else "newest of %d kernels" % len(versions)
    return ImageKernel(v, how, vmlinuz_digest(entries, v), modules_digest(entries, v))


@dataclasses.dataclass(frozen=True)
class RunningKernel:
    version: str
    vmlinuz: str   # digest of the node's /boot/vmlinuz-<version>, "" if absent
    modules: str


def running_kernel(release, node_entries, vmlinuz=None):
    if vmlinuz is None:
        vmlinuz = vmlinuz_digest(node_entries, release)
    return RunningKernel(release, vmlinuz, modules_digest(node_entries, release))


def compare(running, image):
    """Return (same, reasons)."""
    if not image.version:
        return False, ["image has no kernel (no /boot/vmlinuz-*)"]
    if image.version != running.version:
        return False, ["image kernel %s (%s) differs from running kernel %s"
                       % (image.version, image.chosen_by, running.version)]
    reasons = []
    if not running.vmlinuz:
        reasons.append("node has no /boot/vmlinuz-%s to compare; compared by name and modules"
                       % running.version)
    elif running.vmlinuz != image.vmlinuz:
        return False, ["image kernel %s has the running kernel's name but a different "
                       "vmlinuz build" % image.version]
    if running.modules != image.modules:
        return False, ["image's modules for %s differ from the running kernel's" % image.version]
    reasons.append("image kernel %s is the running kernel (same vmlinuz and modules)"
                   % image.version if running.vmlinuz else
                   "image kernel %s matches the running kernel's name and modules" % image.version)
    return True, reasons


def kernel_files(entries, version):
    """The node paths of one kernel version: vmlinuz, initrd, System.map, config,
    and its module tree (through /lib -> usr/lib if that is a link)."""
    out = [rel for rel in ("boot/vmlinuz-%s" % version, "boot/initrd.img-%s" % version,
                           "boot/System.map-%s" % version, "boot/config-%s" % version)
           if rel in entries]
    modules = resolve(entries, "lib/modules/" + version)
    if modules in entries:
        out.append(modules)
    return out


# A same-name rebuild replaces the running build's vmlinuz and initrd in place, so
# before the sync the running build is copied under another name: the fallback.
# GRUB's 10_linux lists every /boot/vmlinuz-* (skipping only *.dpkg-*, *.rpm*, *.sig
# and README*), takes the text after "vmlinuz-" as the version and boots the entry
# with /boot/initrd.img-<that version>: so the copy of initrd.img-<R> is named with
# the same suffix, and the copy has a menu entry of its own with its own initramfs.
# The module tree is not copied: /lib/modules/<R> becomes the new build's, which a
# Debian same-name rebuild keeps ABI-compatible, and the early-boot modules the copy
# needs to mount its root are in its own initramfs.
FALLBACK_SUFFIX = ".update-agent-prev"


def fallback_release(release):
    """The version name the copy of `release`'s running build is listed under."""
    return release + FALLBACK_SUFFIX


def fallback_paths(release):
    """(vmlinuz, initrd) of the copy, root-relative."""
    prev = fallback_release(release)
    return ("boot/vmlinuz-" + prev, "boot/initrd.img-" + prev)


def boot_image(cmdline):
    """The file name of the kernel the boot loader booted: BOOT_IMAGE= (GRUB sets it
    to the path it loaded, /boot/vmlinuz-<R> or, /boot on its own, /vmlinuz-<R>)."""
    for arg in cmdline.split():
        if arg.startswith("BOOT_IMAGE="):
            return posixpath.basename(arg[len("BOOT_IMAGE="):])
    return ""


def booted_fallback(release, booted):
    """The node booted the copy: an update of the same name came back on it."""
    return booted == posixpath.basename(fallback_paths(release)[0])


@dataclasses.dataclass(frozen=True)
class Fallback:
    kernel: str = ""      # the name the boot loader falls back to ("" if none)
    copies: tuple = ()    # ((from, to), ...) root-relative: made before the sync
    kept: tuple = ()      # the copy's paths, kept by the sync until the new build is proven


def fallback(running, image, node_entries, on_copy=False):
    """What the boot loader falls back to if the image's kernel does not boot.

    running: RunningKernel (its vmlinuz the running build's digest); image:
    ImageKernel; on_copy: the running build is in the copy already (the node
    booted it, or made it and has not rebooted since). A copy is made only when
    the image replaces the running build's files under the same name; a copy
    that holds the running build is kept, whatever the image brings."""
    release = running.version
    rebuild = image.version == release and (running.vmlinuz != image.vmlinuz
                                            or running.modules != image.modules)
    if not (on_copy or rebuild):
        return Fallback(kernel=release)
    kept = fallback_paths(release)
    if on_copy:  # it holds the running build already
        return Fallback(fallback_release(release), (), kept)
    sources = ("boot/vmlinuz-" + release, "boot/initrd.img-" + release)
    copies = tuple((src, dst) for src, dst in zip(sources, kept) if src in node_entries)
    if not copies or copies[0][0] != sources[0]:
        # no vmlinuz in the walk (/boot on its own, not synced): nothing is replaced
        return Fallback(kernel=release)
    return Fallback(fallback_release(release), copies, kept)
