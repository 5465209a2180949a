"""The demo: update a sandbox node in place, and show the plan and the result.

Builds image A and image B (same kernel; B changes a service, a library at the
same size and mtime, accounts, and adds and deletes files), brings a node up
from A with a read-only root, then runs the real `update-agent` against it:
--dry-run, apply, apply again (a no-op) and status. It checks the promises
and cleans up everything it mounted. Run it through tools/demo.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import sandbox  # noqa: E402

AGENT = os.path.join(os.path.dirname(sys.executable), "update-agent")
PRESERVED = ("etc/hostname", "etc/machine-id", "etc/ssh/ssh_host_ed25519_key",
             "home/operator/notes", "mnt/state/db/records")


def banner(text):
    print("\n=== %s ===" % text, flush=True)


def run_agent(root, meta, *args):
    argv = [AGENT, "--root", root, "--metadata", meta] + list(args)
    print("$ update-agent %s" % " ".join(argv[1:]), flush=True)
    r = subprocess.run(argv, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sys.stdout.write(r.stdout)
    return r


def read(root, rel):
    with open(os.path.join(root, rel), "rb") as f:
        return f.read()


def root_options(root):
    return subprocess.run(["findmnt", "-n", "-o", "OPTIONS", "--mountpoint", root],
                          capture_output=True, text=True).stdout.strip()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep", action="store_true", help="keep the work dir for inspection")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("demo: run as root (it loop-mounts a sandbox node)")
    release = os.uname().release
    work = tempfile.mkdtemp(prefix="update-agent-demo-")
    checks = []
    node = None
    try:
        banner("building images A and B (kernel %s, the running one)" % release)
        tree_a = sandbox.build_node_tree(os.path.join(work, "A"), "img-A", release, "A")
        tree_b = sandbox.build_node_tree(os.path.join(work, "B"), "img-B", release, "B")
        image_b = os.path.join(work, "img-B.ext4")
        sandbox.mkfs(image_b, 32, tree=tree_b)
        digest = sandbox.image_digest(image_b)

        banner("bringing up a sandbox node from image A")
        node = sandbox.SandboxNode(os.path.join(work, "node"),
                                   sandbox.make_root_image(tree_a, os.path.join(work, "root.ext4")))
        node.start()
        root = node.root
        # as an operator copies an image onto a node: where file:// URLs may point
        url = node.offer(image_b)
        meta = os.path.join(work, "metadata.json")
        with open(meta, "w") as f:
            json.dump({"image_id": "img-B", "update_agent": {
                "image_url": url, "image_digest": digest}}, f, indent=1)
        print("image B: %s (%s)" % (url, digest))
        before = {rel: read(root, rel) for rel in PRESERVED}
        print("node root %s mounted %s; image_id %s" % (root, root_options(root),
                                                         read(root, "etc/image_id").decode().strip()))

        banner("what would happen: update-agent --dry-run")
        r = run_agent(root, meta, "--dry-run")
        checks.append(("--dry-run made a plan", r.returncode == 0))

        banner("update in place: update-agent apply")
        r = run_agent(root, meta, "apply", "-v")
        checks.append(("apply succeeded", r.returncode == 0))

        banner("the same metadata again is a no-op")
        r = run_agent(root, meta, "apply")
        checks.append(("second apply is a no-op", r.returncode == 0 and "plan: noop" in r.stdout))

        banner("update-agent status")
        run_agent(root, meta, "status")

        banner("checks")
        checks += [
            ("image_id committed", read(root, "etc/image_id") == b"img-B\n"),
            ("root is read-only again", "ro" in root_options(root).split(",")),
            ("library changed at same size and mtime was updated",
             read(root, "usr/lib/app/libapp.so") == read(tree_b, "usr/lib/app/libapp.so")),
            ("service updated", read(root, "usr/bin/app") == read(tree_b, "usr/bin/app")),
            ("deleted files gone", not os.path.exists(os.path.join(root, "usr/share/app-old"))),
            ("node's own user kept, image's new user added",
             b"operator:" in read(root, "etc/passwd") and b"newsvc:" in read(root, "etc/passwd")),
        ] + [("preserved /%s unchanged" % rel, read(root, rel) == before[rel]) for rel in PRESERVED]
        for name, ok in checks:
            print("  [%s] %s" % ("ok" if ok else "FAILED", name))
    finally:
        if node is not None:
            node.stop()
        if args.keep:
            print("work dir kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    failed = [n for n, ok in checks if not ok]
    print("\ndemo: %s" % ("all checks passed" if not failed else "FAILED: " + ", ".join(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
