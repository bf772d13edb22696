"""`reconcile status` (placeholder until its issue lands)."""

from __future__ import annotations

from pathlib import Path

from reconciler.errors import ReconcilerError


def run(directory: Path, *, json_output: bool) -> int:
    raise ReconcilerError("'reconcile status' is not implemented yet")
