"""What the import contract (.importlinter) cannot see: decide/ calls nothing that
does I/O, even through a module it may import (os, time), and only system.py
imports subprocess.

The plan is only trustworthy if deciding it cannot touch the node: a decide/
function that read a file or the clock would make the same inputs plan
differently, and its tests would depend on the machine they run on.
"""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "agent",
                       "update_agent")

# os functions that touch the filesystem, processes or the environment
OS_IO = {
    "open", "fdopen", "read", "write", "close", "listdir", "scandir", "stat", "lstat",
    "fstat", "statvfs", "walk", "fwalk", "remove", "unlink", "rmdir", "removedirs", "rename",
    "renames", "replace", "mkdir", "makedirs", "link", "symlink", "readlink", "chmod",
    "chown", "lchown", "utime", "truncate", "access", "chdir", "getcwd", "fsync", "sync",
    "getenv", "putenv", "environ", "system", "popen", "fork", "kill", "getpid", "uname",
    "urandom", "mkfifo", "mknod", "sendfile", "copy_file_range",
}
OS_PATH_IO = {
    "exists", "lexists", "isfile", "isdir", "islink", "ismount", "getsize", "getmtime",
    "getatime", "getctime", "realpath", "samefile", "expanduser", "abspath",
}
# the clock: a plan takes the time it weighs as an argument
TIME_IO = {"time", "time_ns", "monotonic", "monotonic_ns", "sleep", "perf_counter",
           "perf_counter_ns", "process_time"}
BANNED = ({"open", "builtins.open", "io.open", "datetime.datetime.now",
           "datetime.datetime.utcnow", "datetime.date.today"}
          | {"os." + f for f in OS_IO} | {"os.path." + f for f in OS_PATH_IO}
          | {"time." + f for f in TIME_IO})
IO_MODULES = ("subprocess", "socket", "shutil", "tempfile", "ctypes", "urllib.request",
              "http.client")


def _imports(tree):
    """Each import as (line, what it imports, the name it binds, what that name is)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                bound = a.asname or a.name.split(".")[0]
                yield node.lineno, a.name, bound, a.name if a.asname else bound
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                what = node.module + "." + a.name
                yield node.lineno, what, a.asname or a.name, what


def _dotted(node, aliases):
    """The dotted name an expression refers to (os.path.exists), or None."""
    attrs = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([aliases.get(node.id, node.id)] + attrs[::-1])


def _banned_module(module):
    return any(module == m or module.startswith(m + ".") for m in IO_MODULES)


def io_uses(source):
    """What in this module's source does I/O: ["line N: what"], [] if nothing."""
    tree = ast.parse(source)
    found, aliases = [], {}
    for line, what, bound, target in _imports(tree):
        aliases[bound] = target
        if _banned_module(what) or what in BANNED:
            found.append("line %d: imports %s" % (line, what))
    for node in ast.walk(tree):
        # a reference, called or not: `list_dir = os.listdir` is caught too
        if isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load):
            name = _dotted(node, aliases)
            if name in BANNED:
                found.append("line %d: uses %s" % (node.lineno, name))
    return sorted(set(found))


def imports_subprocess(source):
    return any(what == "subprocess" or what.startswith("subprocess.")
               for _, what, _, _ in _imports(ast.parse(source)))


def _modules(under):
    for top, dirs, files in os.walk(under):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(top, name)
                with open(path, encoding="utf-8") as f:
                    yield os.path.relpath(path, PACKAGE), f.read()


def test_decide_does_no_io():
    modules = list(_modules(os.path.join(PACKAGE, "decide")))
    assert len(modules) > 5, "decide/ not found under %s" % PACKAGE
    found = {path: io_uses(source) for path, source in modules}
    assert {path: uses for path, uses in found.items() if uses} == {}


def test_only_system_imports_subprocess():
    importers = [path for path, source in _modules(PACKAGE) if imports_subprocess(source)]
    assert importers == ["system.py"]


@pytest.mark.parametrize("source, expected", [
    ("with open('/etc/image_id') as f:\n    pass\n", "line 1: uses open"),
    ("import os\nos.listdir('/')\n", "line 2: uses os.listdir"),
    ("import os\nnames = [e.name for e in os.scandir('/')]\n", "line 2: uses os.scandir"),
    ("import os\nos.stat('/x')\n", "line 2: uses os.stat"),
    ("import os as o\no.makedirs('/x')\n", "line 2: uses os.makedirs"),
    ("import os\nos.path.exists('/x')\n", "line 2: uses os.path.exists"),
    ("from os import path\npath.isdir('/x')\n", "line 2: uses os.path.isdir"),
    ("from os import walk\n", "line 1: imports os.walk"),
    ("import time\nnow = time.time()\n", "line 2: uses time.time"),
    ("import time\ntime.sleep(1)\n", "line 2: uses time.sleep"),
    ("from time import monotonic\n", "line 1: imports time.monotonic"),
    ("import subprocess\n", "line 1: imports subprocess"),
    ("from socket import socket\n", "line 1: imports socket.socket"),
    ("import urllib.request\n", "line 1: imports urllib.request"),
    ("import os\nlist_dir = os.listdir\n", "line 2: uses os.listdir"),
    ("from datetime import datetime\nnow = datetime.now()\n", "line 2: uses datetime.datetime.now"),
])
def test_the_checker_catches_io(source, expected):
    assert expected in io_uses(source)


@pytest.mark.parametrize("source", [
    "import os\nrel = os.path.normpath('a/../b').lstrip('/')\n",
    "import os\nos.path.join('a', 'b')\n",
    "import posixpath\nposixpath.dirname('/a/b')\n",
    "import hashlib\nhashlib.sha256(b'').hexdigest()\n",
    "import stat\nstat.S_ISDIR(0o040755)\n",
    "import urllib.parse\nurllib.parse.urlsplit('http://x/')\n",
    "def plan(opened):\n    return opened.time\n",
])
def test_the_checker_lets_pure_code_pass(source):
    assert io_uses(source) == []


def test_the_subprocess_check_sees_every_spelling():
    assert imports_subprocess("import subprocess\n")
    assert imports_subprocess("from subprocess import run\n")
    assert imports_subprocess("import subprocess as sp\n")
    assert not imports_subprocess("import shlex\nshlex.quote('x')\n")
