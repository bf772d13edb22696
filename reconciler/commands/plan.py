"""`reconcile plan` (placeholder until its issue lands)."""

from __future__ import annotations

from pathlib import Path

from reconciler.errors import ReconcilerError


def run(
    directory: Path,
    *,
    servers: list[str],
    json_output: bool,
    detailed_exitcode: bool,
    trust_new_host_keys: bool,
) -> int:
    raise ReconcilerError("'reconcile plan' is not implemented yet")
