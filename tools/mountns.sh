# Sourced by tools/test and tools/demo: both run in a private mount namespace.

# Exit 2 with one line saying what is missing when no such namespace can be made
# (unshare's own "cannot change root filesystem propagation" says neither).
need_private_mount_ns() {
    if err=$(unshare -m --propagation private true 2>&1); then
        return 0
    fi
    case "$err" in
    *propagation*)
        echo "$1: needs a private mount namespace, and here / is not a mount point" \
             "(a container's root?): run it in a VM, or in a container run with --privileged" \
             "whose / is a mount point (unshare: ${err##*: })" >&2 ;;
    *)
        echo "$1: needs a private mount namespace: run it as root with CAP_SYS_ADMIN" \
             "(a VM, or a container run with --privileged) (unshare: ${err##*: })" >&2 ;;
    esac
    exit 2
}

# sudo (disk-image-create's, in the dib tests) fails with "unable to resolve host"
warn_unresolvable_host() {
    if [ ! -e /etc/hosts ]; then
        echo "$1: warning: /etc/hosts is missing: sudo will say \"unable to resolve host\";" \
             "create it with the lines '127.0.0.1 localhost' and '127.0.1.1 $(hostname)'" >&2
    fi
}
