"""The first look of the library's hook commands, having imported only ``os``, ``sys``
and ``json``.

Most runs of the replication hooks have nothing to do: every push a server takes
from a peer runs its ``reference-transaction`` (quorum mode) and ``post-receive``
too, and in quorum mode ``post-receive`` has nothing left to do. Importing
``reconciler.server.replication`` (processes, threads, dataclasses, the queue) costs
several times Python's own start, and a replication push waits for the peer's hooks
to end, so ``launch`` answers first and imports it only for a run that has work.

The gate ends a run only where the replication module would end it without a word
and with the same exit status:

- ``post-receive``: the push came from a peer (``RECONCILER_REPLICA`` is set: a local
  peer, or this program's own pushes; or gitosis's ``GITOSIS_USER`` is one of the
  settings' ``mirror_users``), or quorum mode, a repository other than the admin
  repository, and no kept foreign hook to run (``run_kept_hooks``);
- ``reference-transaction prepared``: no replicated ref in the transaction, or a write
  that is not a user's (the same two markers): a peer's proposal or put-back, which
  the peer takes without proposing it onward (``replication.quorum_hook``).

Whenever the gate is not sure (arguments such as ``--drain``, no settings file above
the repository, one it cannot read or that ``settings.parse_settings`` would refuse,
an input line that is not ``OLD NEW REF``), the replication module runs with the same
input and decides and reports.
"""

from __future__ import annotations

import gc
import io
import json
import os
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType

# The same values as reconciler.server.common.SETTINGS_PATH, .FORMAT_VERSION,
# reconciler.server.settings.MAX_BASE_DEPTH and .MODES, and common.PROC_RECEIVE_REFS
# (replication's QUORUM_PREFIXES; tests/replication/test_hook_gate.py checks, and that
# ``valid_settings`` agrees with ``parse_settings``); importing those modules is
# what this one avoids.
SETTINGS_PATH = ".reconciler/replication.json"
FORMAT_VERSION = 1
MAX_BASE_DEPTH = 32
MODES = ("sync", "async", "quorum")
QUORUM_PREFIXES = ("refs/heads/", "refs/tags/", "refs/notes/")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_NAME_CHARS = _LETTERS | frozenset("0123456789.-")
_HEX = frozenset("0123456789abcdef")


def _server_name(value: object) -> bool:
    # common.SERVER_NAME: [a-zA-Z][a-zA-Z0-9.-]*
    return isinstance(value, str) and value[:1] in _LETTERS and all(c in _NAME_CHARS for c in value)


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def valid_settings(data: object) -> bool:
    """Whether ``settings.parse_settings`` takes ``data`` (the settings file's JSON)."""
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        return False
    peers = data.get("peers", [])
    timeout = data.get("timeout", 30)
    return (
        _server_name(data.get("server"))
        and _strings(peers)
        and all(_server_name(p) for p in peers)
        and _strings(data.get("mirror_users", []))
        and data.get("mode", "sync") in MODES
        and not isinstance(timeout, bool)
        and isinstance(timeout, (int, float))
        and 0 < timeout <= 3600
        and isinstance(data.get("run_kept_hooks", False), bool)
        and isinstance(data.get("admin_repository", ""), str)
    )


def _object_id(value: str) -> bool:
    return len(value) in (40, 64) and all(c in _HEX for c in value)


def _updates(text: str, prefixes: tuple[str, ...] | None) -> list[list[str]] | None:
    """The ``OLD NEW REF`` lines (only those of refs under ``prefixes``, if given), as
    ``replication.parse_updates`` reads them; None when it would refuse one."""
    updates = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if prefixes is not None and not (len(parts) == 3 and parts[2].startswith(prefixes)):
            continue
        if not (
            len(parts) == 3
            and _object_id(parts[0])
            and _object_id(parts[1])
            and parts[2].startswith("refs/")
        ):
            return None
        updates.append(parts)
    return updates


def _find_base(git_dir: str) -> str | None:
    directory = git_dir
    for _depth in range(MAX_BASE_DEPTH):
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent
        if os.path.isfile(os.path.join(directory, SETTINGS_PATH)):
            return directory
    return None


def _settings(base: str) -> dict[str, object] | None:
    try:
        with open(os.path.join(base, SETTINGS_PATH), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if valid_settings(data) else None


def _from_peer(environ: Mapping[str, str], data: Mapping[str, object]) -> bool:
    users = data.get("mirror_users", [])
    return bool(environ.get("RECONCILER_REPLICA")) or (
        isinstance(users, list) and environ.get("GITOSIS_USER", "") in users
    )


def peer_settings(environ: Mapping[str, str] = os.environ) -> dict[str, object] | None:
    """The settings of the repository ``GIT_DIR`` names when this write comes from a
    peer (``_from_peer``); None when it does not, or when unsure (no settings file
    above it, or one ``settings.parse_settings`` would refuse)."""
    base = _find_base(os.path.abspath(environ.get("GIT_DIR", ".")))
    data = _settings(base) if base is not None else None
    return data if data is not None and _from_peer(environ, data) else None


def nothing_to_do(
    name: str, args: Sequence[str], stdin: str, environ: Mapping[str, str] = os.environ
) -> bool:
    """Whether this run of the hook ``name`` can end at once, with status 0."""
    if name == "post-receive" and not args:
        updates = _updates(stdin, None)
        if updates is None:
            return False
        if not updates or environ.get("RECONCILER_REPLICA"):
            return True
    elif name == "reference-transaction" and list(args) == ["prepared"]:
        updates = _updates(stdin, QUORUM_PREFIXES)
        if updates is None:
            return False
        if not updates:
            return True
    else:
        return False
    git_dir = os.path.abspath(environ.get("GIT_DIR", "."))
    base = _find_base(git_dir)
    if base is None:
        return name == "reference-transaction"  # not a managed repository
    data = _settings(base)
    if data is None:
        return False
    if _from_peer(environ, data):
        return True
    if name == "reference-transaction":
        return data.get("mode", "sync") != "quorum"
    if data.get("mode") != "quorum" or data.get("run_kept_hooks", False):
        return False
    if not _hands_pushes_to_proc_receive(git_dir):
        return False  # post-receive replicates what no proc-receive decided
    repository = os.path.relpath(git_dir, base).replace(os.sep, "/")
    if repository.endswith(".git"):
        repository = repository[: -len(".git")]
    return repository != data.get("admin_repository", "")


def _hands_pushes_to_proc_receive(git_dir: str) -> bool:
    """Whether the repository's config has ``receive.procReceiveRefs`` (the replication
    module's ``proc_receive.configured``, read with a plain scan: a ``[receive]``
    section holding the key). Unsure (unreadable, an include, odd syntax): False."""
    try:
        with open(os.path.join(git_dir, "config"), encoding="utf-8") as handle:
            text = handle.read(1 << 20)
    except (OSError, UnicodeDecodeError):
        return False
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line.lower()
            if section.startswith("[include") or section.startswith("[includeif"):
                return False
            continue
        key = line.split("=", 1)[0].strip().lower()
        if section == "[receive]" and key == "procreceiverefs" and "=" in line:
            return True
    return False


def launch(name: str, target: str) -> int:
    """Run the hook command ``name``: end it here when it has nothing to do, otherwise
    call ``target`` ("module:function") with the same arguments and input."""
    module, function = target.split(":")
    try:
        raw = sys.stdin.buffer.read()
    except OSError:
        return _run(module, function)  # it reads again, and says why it cannot
    try:
        text: str | None = raw.decode(sys.stdin.encoding or "utf-8", sys.stdin.errors or "strict")
    except (UnicodeDecodeError, LookupError):
        text = None
    if text is not None and nothing_to_do(name, sys.argv[1:], text):
        return 0
    # The hook reads its input as it would have from git.
    sys.stdin = io.TextIOWrapper(
        io.BytesIO(raw), encoding=sys.stdin.encoding, errors=sys.stdin.errors
    )
    return _run(module, function)


def import_frozen(module: str) -> ModuleType:
    """``module``, imported with the garbage collector off, and what it made frozen.

    The replication module's import makes tens of thousands of objects that live as
    long as the process (classes, functions, compiled patterns); the collector walks
    them again and again while they are made, a quarter of the import's time, and
    every later collection would walk them once more. Frozen (``gc.freeze``), later
    collections leave them out."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        imported = __import__(module, fromlist=["_"])
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
    return imported


def _run(module: str, function: str) -> int:
    entry = getattr(import_frozen(module), function)
    return int(entry())
