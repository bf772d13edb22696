"""Writing files the way an operator's checkout deserves: atomically, only on change."""

from __future__ import annotations

from pathlib import Path

from reconciler.server.common import atomic_write


def write_if_changed(path: Path, content: str, mode: int = 0o644) -> bool:
    """Write ``content`` to ``path`` unless it already holds exactly that.

    The new content goes to a temporary file in the same directory, is fsynced
    and renamed over ``path``, so a reader never sees half a file. Returns
    whether the file was written.
    """
    data = content.encode("utf-8")
    try:
        if path.read_bytes() == data and (path.stat().st_mode & 0o7777) == mode:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data, mode)
    return True
