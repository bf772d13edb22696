"""The replication hook that apply installs on every server, and its settings.

``hooks/post-receive`` of every mirrored repository is a byte-for-byte copy of
``post_receive.py`` (mode 0755), recognised by its sha256 and by
``HOOK_MARKER`` on its second line. The hook reads the server's settings from
``<repositories>/.reconciler/replication.json`` (``SETTINGS_PATH``); apply writes
that file with ``settings_json``. The queue the hook leaves for apply is read
with ``reconciler.replication.queue``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from importlib import resources

from reconciler.replication.post_receive import (
    DRAIN_LOCK_PATH,
    FORMAT_VERSION,
    HOOK_MARKER,
    HOOK_VERSION,
    MODES,
    QUEUE_PATH,
    SETTINGS_PATH,
)

__all__ = [
    "DRAIN_LOCK_PATH",
    "FORMAT_VERSION",
    "HOOK_FILE_MODE",
    "HOOK_MARKER",
    "HOOK_VERSION",
    "QUEUE_PATH",
    "SETTINGS_PATH",
    "hook_digest",
    "hook_source",
    "settings_json",
]

HOOK_FILE_MODE = 0o755


def hook_source() -> bytes:
    """The exact bytes to install as ``hooks/post-receive``."""
    return resources.files(__name__).joinpath("post_receive.py").read_bytes()


def hook_digest() -> str:
    """The sha256 (hex) that identifies the current hook."""
    return hashlib.sha256(hook_source()).hexdigest()


def settings_json(
    *,
    server: str,
    peers: Iterable[str],
    mirror_users: Iterable[str],
    mode: str = "sync",
    timeout: float = 30,
    run_kept_hooks: bool = False,
    admin_repository: str | None = None,
) -> bytes:
    """The content of ``SETTINGS_PATH`` for one server, stable for comparison."""
    if mode not in MODES:
        raise ValueError(f"replication mode must be one of {', '.join(MODES)}, not {mode!r}")
    data = {
        "format_version": FORMAT_VERSION,
        "server": server,
        # Declared order: the hook reports the peers in this order.
        "peers": [p for p in dict.fromkeys(peers) if p != server],
        "mirror_users": sorted(set(mirror_users)),
        "mode": mode,
        "timeout": timeout,
    }
    if run_kept_hooks:
        # Only when on: the settings of every cluster that does not use it stay as they were.
        data["run_kept_hooks"] = True
    if admin_repository is not None:
        data["admin_repository"] = admin_repository
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")
