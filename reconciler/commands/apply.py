"""`reconcile apply` (placeholder until its issue lands)."""

from __future__ import annotations

from pathlib import Path

from reconciler.errors import ReconcilerError


def run(
    directory: Path,
    *,
    servers: list[str],
    yes: bool,
    json_output: bool,
    cron: bool,
    trust_new_host_keys: bool,
    replace_foreign: bool,
) -> int:
    raise ReconcilerError("'reconcile apply' is not implemented yet")
