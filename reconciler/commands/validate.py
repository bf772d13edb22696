"""`reconcile validate` (placeholder until its issue lands)."""

from __future__ import annotations

from pathlib import Path

from reconciler.errors import ReconcilerError


def run(directory: Path) -> int:
    raise ReconcilerError("'reconcile validate' is not implemented yet")
