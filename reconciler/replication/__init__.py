"""Replication as the operator's side sees it: the hook's settings, queue and records.

The hook itself is ``reconciler.server.replication``, run on each server from the
server library (``reconciler.server.library``) through a stub in every mirrored
repository's ``hooks/post-receive`` (``reconciler.server.hooks``). It reads the
server's settings from ``<repositories>/.reconciler/replication.json``
(``SETTINGS_PATH``); apply writes that file with ``settings_json``. The queue the
hook leaves for apply is read with ``reconciler.replication.queue``.
"""

from __future__ import annotations

from reconciler.server.common import DRAIN_LOCK_PATH, FORMAT_VERSION, QUEUE_PATH, SETTINGS_PATH
from reconciler.server.hooks import HOOK_MARKER, HOOK_MODE, stub
from reconciler.server.settings import MODES, settings_json

__all__ = [
    "DRAIN_LOCK_PATH",
    "FORMAT_VERSION",
    "HOOK_MARKER",
    "HOOK_MODE",
    "MODES",
    "QUEUE_PATH",
    "SETTINGS_PATH",
    "settings_json",
    "stub",
]
