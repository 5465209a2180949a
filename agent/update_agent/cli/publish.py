"""`update-agent publish IMAGE REPO [--image-id ID] [--key KEY]`: add an image to an
object repository; `update-agent publish --prune --keep N [--grace S] REPO`: retire
all but the newest N images and remove what only long-retired ones used.

Needs no node, and no root for a directory or a tar archive (docs/repository.md).
"""

import argparse
import os
import shutil
import tempfile

from update_agent.cli import report
from update_agent.decide.image_id import validate_image_id
from update_agent.errors import BadInput
from update_agent.images import formats, signature
from update_agent.repo import prune as prune_mod, publish as publish_mod
from update_agent.system import System

TARS = ("tar", "tar.gz", "tar.zst")
DEFAULT_GRACE = 24 * 3600  # longer than any node's fetch, and than a cache keeps a record


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as every other bad input
        raise BadInput("publish: %s" % message)


def parser():
    p = _Parser(prog="update-agent publish", description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", metavar="IMAGE REPO", help="the image and the repository "
                   "(with --prune: the repository only)")
    p.add_argument("--image-id", help="the image's id (default: the image's /etc/image_id)")
    p.add_argument("--key", help="sign the manifest digest with this ed25519 private key (PEM)")
    p.add_argument("--prune", action="store_true", help="prune the repository instead")
    p.add_argument("--keep", type=int, help="--prune: keep the newest N images")
    p.add_argument("--grace", type=int, default=DEFAULT_GRACE,
                   help="--prune: seconds a retired image's files stay (default %(default)s)")
    p.add_argument("--json", action="store_true")
    return p


def main(argv, out, system=None):
    args = parser().parse_args(argv)
    system = system or System()
    if args.prune:
        return _prune(args, out, system)
    if len(args.paths) != 2:
        raise BadInput("publish needs IMAGE and REPO, got %d paths: %s" % (len(args.paths), " ".join(args.paths)))
    if args.keep is not None:
        raise BadInput("publish: --keep %d goes with --prune" % args.keep)
    image, repo = args.paths
    key = signature.load_private_key(args.key) if args.key else None
    image_id = validate_image_id(args.image_id, key="--image-id", what="option") if args.image_id is not None else None
    signer = (lambda d: signature.sign(d, key)) if key else None
    fmt = formats.detect(image)
    if fmt in TARS and os.geteuid() != 0:  # unpacking would lose the owners: read the headers
        done = publish_mod.publish_tar(image, fmt, repo, image_id, system, signer)
    elif fmt != "directory" and os.geteuid() != 0:
        raise BadInput("image %s: a %s image is opened only as root (it is mounted); run as "
                       "root, or publish a directory or a tar archive" % (image, fmt))
    else:
        work = tempfile.mkdtemp(prefix="update-agent-publish-")
        try:
            with formats.open_tree(image, system, work) as tree:
                done = publish_mod.publish(tree, repo, image_id, system, signer)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    text = ("image %s is already in %s (manifest %s)" % (done.image_id, repo, done.manifest)
            if done.already else
            "published %s to %s: manifest %s, %d paths, %d contents (%d already there); "
            "%d new objects, %d new packs, %d bytes written"
            % (done.image_id, repo, done.manifest, done.files, done.objects, done.reused,
               done.new_objects, done.new_packs, done.written_bytes))
    report.emit(out, args.json, done._asdict(), text)
    return 0


def _prune(args, out, system):
    if len(args.paths) != 1:
        raise BadInput("publish --prune takes only REPO, got: %s" % " ".join(args.paths))
    if args.keep is None or args.keep < 1:
        raise BadInput("publish --prune needs --keep N with N at least 1, got %s" % args.keep)
    if args.grace < 0:
        raise BadInput("publish --prune: --grace %d must not be negative" % args.grace)
    done = prune_mod.prune(args.paths[0], args.keep, args.grace, system)
    report.emit(out, args.json, done._asdict(),
                "pruned %s: retired %s; dropped %s; removed %d files, %d bytes"
                % (args.paths[0], ", ".join(done.retired) or "none", ", ".join(done.expired) or "none",
                   done.deleted, done.freed_bytes))
    return 0
