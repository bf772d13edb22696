"""`reconcile install-hooks` (placeholder until its issue lands)."""

from __future__ import annotations

from pathlib import Path

from reconciler.errors import ReconcilerError


def run(directory: Path) -> int:
    raise ReconcilerError("'reconcile install_hooks' is not implemented yet")
