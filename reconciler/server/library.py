"""The server library: this package, installed once per server, and the bare server's
git user.

``~/.reconciler/server/lib-VERSION/`` holds the package (``reconciler/__init__.py``,
``reconciler/server/``, ``reconciler/gitosis/``), made aside and renamed into place
whole; ``bin/post-receive`` runs its replication hook (every repository's stub
execs it); ``VERSION`` is written last. VERSION is a digest of the files
(``library_digest``), so any change is a new version, an upgrade is one op per
server, and gather checks cheaply, once per server, that the files are intact.

A server served by the project's gitosis runtime also gets the commands
``~/.reconciler/gitosis/bin/gitosis-{init,serve,run-hook}`` (authorized_keys
``command=`` lines and gitosis-admin's post-update hook name them by absolute path,
so they stay where they are) running the same library, and
``~/.reconciler/gitosis/VERSION``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import pwd
import re
import shlex
import shutil
import sys
from collections.abc import Iterable
from typing import Any

from reconciler.server.common import (
    SETTINGS_PATH,
    OpError,
    atomic_write,
    is_login_name,
    make_dirs,
    make_tree,
    read_bytes,
    read_text,
    resolve,
    run,
)
from reconciler.server.ops import CreateGitUser, InstallLibrary, handler
from reconciler.server.settings import MAX_BASE_DEPTH
from reconciler.server.wire import Record

# Relative to the git user's home.
LIBRARY_DIR = ".reconciler/server"
RUNTIME_DIR = ".reconciler/gitosis"
RUNTIME_BIN = f"{RUNTIME_DIR}/bin"
# Commands in LIBRARY_DIR/bin: name -> "module:function".
ENTRY_POINTS = {
    "post-receive": "reconciler.server.replication:main",
    # proc_receive, not replication: a peer's proposal is written without importing it.
    "proc-receive": "reconciler.server.proc_receive:main",
    # Links of the release before proc-receive; a no-op until apply removes them.
    "reference-transaction": "reconciler.server.replication:transaction_main",
}
# The gitosis runtime's commands in RUNTIME_BIN.
RUNTIME_COMMANDS = {
    "gitosis-init": "reconciler.gitosis.init:main",
    "gitosis-serve": "reconciler.gitosis.serve:main",
    "gitosis-run-hook": "reconciler.gitosis.run_hook:main",
}
VERSION_RE = re.compile(r"[0-9a-f]{8,64}")
MAX_LIBRARY_BYTES = 8 << 20

# -S as well as -I: the library and the gitosis runtime use the standard library
# alone, and -I still runs the site packages' start-up files (.pth), which can cost
# several times Python's own start (55 ms on the test machines, where one imports
# certifi): proc-receive is on every quorum push's path twice, gitosis-serve on every
# user's.
# The collector off while the program's modules are imported, and what they made
# frozen (hook_gate.import_frozen says why).
WRAPPER = """#!{python} -IS
import gc, sys
gc.disable()
sys.path.insert(0, {lib!r})
from {module} import {function}
gc.freeze()
gc.enable()
sys.exit({function}())
"""
# The hooks' commands: most of their runs have nothing to do (a push from a peer,
# quorum mode's post-receive), and the gate tells so having imported only os and
# json, not the replication module, which costs several times Python's own start
# (reconciler.server.hook_gate). -S as well as -I: the hooks use the standard library
# alone, and the site packages' start-up files (.pth) are not theirs to run.
GATED_WRAPPER = """#!{python} -IS
import sys
sys.path.insert(0, {lib!r})
from reconciler.server.hook_gate import launch
sys.exit(launch({name!r}, {target!r}))
"""
# The commands the gate reads the whole input of first; never proc-receive, which
# speaks pkt-lines with receive-pack and whose input ends only when the push does.
GATED = ("post-receive", "reference-transaction")
# bin/reference-transaction: git runs it in every state of every ref transaction,
# and only "prepared" decides (docs/quorum.md); the other states end in the shell.
STATE_WRAPPER = """#!/bin/sh
[ "$1" = prepared ] || exit 0
exec {python} -IS -c {code} {lib} "$@"
"""
STATE_CODE = (
    "import sys;sys.path.insert(0,sys.argv.pop(1));"
    "from reconciler.server.hook_gate import launch;sys.exit(launch({name!r},{target!r}))"
)


# bin/post-receive: most of its runs have nothing to do (every push a server takes from
# a peer; in quorum mode every push to a repository proc-receive decides), and the
# shell tells most of them from the settings file as apply writes it
# (``settings.settings_json``: indent 2, sorted keys) and the repository's config, with
# one awk and no Python start. It decides as ``hook_gate.nothing_to_do`` does, and
# leaves every case it is not sure of (another layout of the settings, an escape in a
# string, an include in the config, a path that is not plain) to that gate, which
# tests/replication/test_post_receive_gate.py checks it agrees with.
POST_RECEIVE_AWK = r"""
FILENAME == ARGV[1] {
	if ($0 ~ /\\/) unsure = 1
	if ($0 ~ /^  "[^"]*": /) {
		key = $0; sub(/^  "/, "", key); sub(/": .*/, "", key)
		if (seen[key]++) unsure = 1
		list = ""
	}
	if (list != "") {
		if ($0 ~ /^  \],?$/) { list = ""; next }
		if ($0 !~ /^    "[^"]+",?$/) { unsure = 1; next }
		item = $0; sub(/^    "/, "", item); sub(/",?$/, "", item)
		if (list == "mirror_users" && item == user) peer = 1
		if (list == "peers" && item !~ /^[a-zA-Z][a-zA-Z0-9.-]*$/) unsure = 1
		next
	}
	if (key == "format_version") version = ($0 ~ /^  "format_version": 1,?$/)
	else if (key == "server") server = ($0 ~ /^  "server": "[a-zA-Z][a-zA-Z0-9.-]*",?$/)
	else if (key == "mode") {
		if ($0 !~ /^  "mode": "(sync|async|quorum)",?$/) unsure = 1
		mode = $0; sub(/^  "mode": "/, "", mode); sub(/",?$/, "", mode)
	} else if (key == "run_kept_hooks") {
		if ($0 ~ /^  "run_kept_hooks": true,?$/) kept = 1
		else if ($0 !~ /^  "run_kept_hooks": false,?$/) unsure = 1
	} else if (key == "admin_repository") {
		if ($0 !~ /^  "admin_repository": "[^"]*",?$/) unsure = 1
		admin = $0; sub(/^  "admin_repository": "/, "", admin); sub(/",?$/, "", admin)
	} else if (key == "timeout") {
		if ($0 !~ /^  "timeout": [0-9]+(\.[0-9]+)?,?$/) unsure = 1
		seconds = $0; sub(/^  "timeout": /, "", seconds); sub(/,$/, "", seconds)
		if (seconds + 0 <= 0 || seconds + 0 > 3600) unsure = 1
	} else if (key == "mirror_users" || key == "peers") {
		if ($0 ~ /^  "[a-z_]+": \[$/) list = key
		else if ($0 !~ /^  "[a-z_]+": \[\],?$/) unsure = 1
	}
	key = ""
	next
}
!decided {
	line = $0; gsub(/^[ \t\r\f\v]+|[ \t\r\f\v]+$/, "", line)
	if (substr(line, 1, 1) == "[") {
		section = tolower(line)
		if (index(section, "[include") == 1) decided = 1
		next
	}
	eq = index(line, "=")
	key = eq ? substr(line, 1, eq - 1) : line
	gsub(/^[ \t]+|[ \t]+$/, "", key)
	if (eq && section == "[receive]" && tolower(key) == "procreceiverefs") { decided = 1; refs = 1 }
}
END {
	if (unsure || list != "" || !version || !server) exit 1
	if (peer) exit 0
	if (mode != "quorum" || kept || !refs) exit 1
	exit name == admin
}
"""
POST_RECEIVE_WRAPPER = """#!/bin/sh
# reconciler's post-receive: nothing to do for most runs (see the awk below and
# reconciler/server/library.py); the rest go to the gate in Python.
quiet() {{
	[ "$#" -eq 0 ] || return 1
	[ -z "${{RECONCILER_REPLICA-}}" ] || return 0
	case ${{GIT_DIR:-.}} in
	.) cd -P . 2>/dev/null || return 1; dir=$PWD ;;
	/*) dir=$GIT_DIR ;;
	*) return 1 ;;
	esac
	case $dir in
	*//* | */. | */.. | */./* | */../* | */) return 1 ;;
	esac
	base=$dir
	depth=0
	while [ "$depth" -lt {depth} ]; do
		base=${{base%/*}}
		[ -n "$base" ] || return 1
		[ -f "$base/{settings}" ] && break
		depth=$((depth + 1))
	done
	[ -f "$base/{settings}" ] || return 1
	name=${{dir#"$base"/}}
	name=${{name%.git}}
	user=${{GITOSIS_USER-}}
	# awk -v reads escapes in a value: a name with a backslash goes to Python.
	case $name$user in *"\\\\"*) return 1 ;; esac
	awk -v name="$name" -v user="$user" {awk} \\
		"$base/{settings}" "$dir/config" 2>/dev/null
}}
quiet "$@" && exit 0
exec {python} -IS -c {code} {lib} "$@"
"""


def library_digest(files: Iterable[tuple[str, bytes]]) -> str:
    """The version of a library: a digest of its files (path below lib-VERSION, content)."""
    digest = hashlib.sha256()
    for path, content in sorted(files):
        digest.update(path.encode() + b"\0" + content + b"\0")
    return digest.hexdigest()[:16]


def wrapper(lib: str, target: str, name: str = "", python: str | None = None) -> bytes:
    """The command ``name`` running ``target`` ("module:function") of ``lib`` (with
    ``python``, this one by default)."""
    python = python or sys.executable
    if name == "reference-transaction":
        code = STATE_CODE.format(name=name, target=target)
        return STATE_WRAPPER.format(
            python=shlex.quote(python), code=shlex.quote(code), lib=shlex.quote(lib)
        ).encode()
    if name == "post-receive":
        return POST_RECEIVE_WRAPPER.format(
            depth=MAX_BASE_DEPTH,
            settings=SETTINGS_PATH,
            awk=shlex.quote(POST_RECEIVE_AWK),
            python=shlex.quote(python),
            code=shlex.quote(STATE_CODE.format(name=name, target=target)),
            lib=shlex.quote(lib),
        ).encode()
    if name in GATED:
        return GATED_WRAPPER.format(python=python, lib=lib, name=name, target=target).encode()
    module, function = target.split(":")
    return WRAPPER.format(python=python, lib=lib, module=module, function=function).encode()


def _lib(root: str, version: str) -> str:
    return os.path.join(root, "lib-" + version)


def _library_files(lib: str) -> list[tuple[str, bytes]] | None:
    """The .py files below ``lib`` (compiled caches left out); None if unreadable."""
    found = []
    total = 0
    for directory, dirs, files in os.walk(lib):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            data = read_bytes(path, MAX_LIBRARY_BYTES)
            if data is None:
                return None
            total += len(data)
            if total > MAX_LIBRARY_BYTES:
                return None
            found.append((os.path.relpath(path, lib), data))
    return found


def _wrappers_current(directory: str, lib: str, targets: dict[str, str]) -> bool:
    return all(
        read_bytes(os.path.join(directory, name), 4096) == wrapper(lib, target, name)
        for name, target in targets.items()
    )


def installed(version: str, home: str | None = None) -> bool:
    """Whether VERSION names ``version`` and its entry points are in place (cheap: the
    full check is gather's)."""
    root = os.path.join(home, LIBRARY_DIR) if home else resolve(LIBRARY_DIR)
    text = read_text(os.path.join(root, "VERSION"), 256)
    lib = _lib(root, version)
    return (
        text is not None
        and text.strip() == version
        and os.path.isdir(lib)
        and _wrappers_current(os.path.join(root, "bin"), lib, ENTRY_POINTS)
    )


@dataclasses.dataclass(frozen=True)
class LibraryFacts(Record):
    """The server library installed in ~/.reconciler/server: its version (None: none)
    and whether its files and commands are that version's."""

    version: str | None = None
    intact: bool = False


@dataclasses.dataclass(frozen=True)
class GitosisFacts(Record):
    """Which gitosis serves the git user: the runtime the reconciler installed (its
    version), and whether a gitosis-serve is on the PATH of sshd's forced commands."""

    runtime: str | None = None
    on_path: bool = True


def library_facts(home: str) -> dict[str, Any]:
    """Gather: the installed version (None: none) and whether its files, entry points
    and (where the runtime is installed) gitosis commands are what that version is."""
    root = os.path.join(home, LIBRARY_DIR)
    text = read_text(os.path.join(root, "VERSION"), 256)
    version = text.strip() if text else None
    intact = False
    if version and VERSION_RE.fullmatch(version):
        lib = _lib(root, version)
        files = _library_files(lib)
        intact = (
            files is not None
            and library_digest(files) == version
            and _wrappers_current(os.path.join(root, "bin"), lib, ENTRY_POINTS)
        )
        runtime = read_text(os.path.join(home, RUNTIME_DIR, "VERSION"), 256)
        if intact and runtime is not None and runtime.strip() == version:
            intact = _wrappers_current(os.path.join(home, RUNTIME_BIN), lib, RUNTIME_COMMANDS)
    return LibraryFacts(version, intact).to_json()


def gitosis_facts(home: str) -> dict[str, Any]:
    """Which gitosis serves here: the runtime the reconciler installed (its version),
    and whether a gitosis-serve is on the PATH that sshd's forced commands get."""
    text = read_text(os.path.join(home, RUNTIME_DIR, "VERSION"), 256)
    return GitosisFacts(
        runtime=text.strip() if text else None,
        on_path=shutil.which("gitosis-serve") is not None,
    ).to_json()


def op_install_library(op: InstallLibrary) -> None:
    """Install the library ``files`` as ``lib-VERSION`` (made aside and renamed into
    place whole; a copy that is not intact is replaced), its entry points in ``bin``
    (each replaced atomically), with ``runtime`` the gitosis commands too, ``VERSION``
    last. A hook or gitosis-serve started before the switch finishes on the version it
    started with; the version current until now is kept for it, older ones go."""
    version = op.version
    if VERSION_RE.fullmatch(version) is None:
        raise OpError(f"refusing library version {version!r}")
    files = {}
    for relative, content in op.files.items():
        if relative.startswith("/") or ".." in relative.split("/"):
            raise OpError(f"refusing library file {relative!r}")
        files[relative] = base64.b64decode(content)
    if library_digest(files.items()) != version:
        raise OpError(f"the library files sent are not version {version}")
    root = resolve(LIBRARY_DIR)
    make_dirs(root, 0o755)
    lib = _lib(root, version)
    present = _library_files(lib) if os.path.isdir(lib) else None
    if present is None or library_digest(present) != version:
        make_tree(root, lib, f"lib-{version}", {r: (c, 0o644) for r, c in files.items()})
    previous = (read_text(os.path.join(root, "VERSION"), 256) or "").strip()
    for directory, targets in _commands(op):
        make_dirs(directory, 0o755)
        for name, target in sorted(targets.items()):
            atomic_write(os.path.join(directory, name), wrapper(lib, target, name), 0o755)
    if op.runtime:
        runtime = resolve(RUNTIME_DIR)
        old_runtime = (read_text(os.path.join(runtime, "VERSION"), 256) or "").strip()
        atomic_write(os.path.join(runtime, "VERSION"), (version + "\n").encode(), 0o644)
        # The runtime's own lib-* of the layout before the server library.
        _remove_libs(runtime, keep=("lib-" + old_runtime,))
    atomic_write(os.path.join(root, "VERSION"), (version + "\n").encode(), 0o644)
    _remove_libs(root, keep=("lib-" + version, "lib-" + previous))


def _commands(op: InstallLibrary) -> list[tuple[str, dict[str, str]]]:
    commands = [(resolve(LIBRARY_DIR + "/bin"), ENTRY_POINTS)]
    if op.runtime:
        commands.append((resolve(RUNTIME_BIN), RUNTIME_COMMANDS))
    return commands


def _remove_libs(root: str, keep: tuple[str, ...]) -> None:
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        if (name.startswith("lib-") or name.startswith(".lib-")) and name not in keep:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def op_create_git_user(op: CreateGitUser) -> None:
    """Run as root: create the git user gitosis serves as (home, a shell for sshd's
    forced commands, no password but not locked, so that key logins work)."""
    user = op.user
    if not is_login_name(user):
        raise OpError(f"refusing to create user {user!r}: not a valid user name")
    try:
        pwd.getpwnam(user)
        return
    except KeyError:
        pass
    # --password '*' in the same call: a run killed between useradd and a usermod
    # would leave an account locked ('!'), whose keys sshd refuses without PAM.
    # sbin is not on every session's PATH (sshd's SetEnv, a sudoer's).
    search = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    found = shutil.which("useradd", path=search)
    if found is None:
        raise OpError("cannot create the git user: useradd is not installed")
    useradd = [found, "--create-home", "--shell", "/bin/sh", "--password", "*"]
    run([*useradd, "--comment", "git version control", user])


OPS = dict(
    [
        handler(InstallLibrary, op_install_library),
        handler(CreateGitUser, op_create_git_user),
    ]
)
