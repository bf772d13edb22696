"""``--textfile DIR``: the run's metrics for node_exporter's textfile collector.

The file is ``DIR/reconcile.prom``, replaced whole (a temporary file that does not
end in ``.prom``, so the collector never reads it, fsynced and renamed), so a
scrape sees the previous run's metrics or this run's, never half of either.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from reconciler.errors import ReconcilerError
from reconciler.metrics import RunInfo, exposition, previous_last_success, run_succeeded
from reconciler.server.common import atomic_write
from reconciler.status import StatusReport

TEXTFILE_NAME = "reconcile.prom"


def check_directory(directory: Path) -> None:
    """Refuse a textfile directory that is not there before any server is touched."""
    if not directory.is_dir():
        raise ReconcilerError(
            f"--textfile {directory}: no such directory (node_exporter's textfile "
            "collector directory must exist)"
        )


class RunClock:
    """When the run started, for its duration; the run's info once it ends."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def finish(
        self,
        exit_code: int,
        previous: str = "",
        *,
        applied: int | None = None,
        failed: int | None = None,
        conflicts: Mapping[str, int] | None = None,
    ) -> RunInfo:
        now = time.time()
        last = now if run_succeeded(exit_code) else previous_last_success(previous)
        return RunInfo(
            finished=now,
            duration=time.monotonic() - self.started,
            exit_code=exit_code,
            last_success=last,
            applied=applied,
            failed=failed,
            conflicts=dict(conflicts or {}),
        )


def read_previous(directory: Path | None) -> str:
    """The metrics an earlier run wrote (for its last success), or ""."""
    if directory is None:
        return ""
    try:
        return (directory / TEXTFILE_NAME).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def write_textfile(directory: Path, report: StatusReport | None, run: RunInfo) -> Path:
    path = directory / TEXTFILE_NAME
    data = exposition(report, run).encode("utf-8")
    try:
        # Readable by node_exporter, which runs as its own user.
        atomic_write(path, data, 0o644)
    except OSError as exc:
        raise ReconcilerError(f"--textfile {directory}: cannot write {path}: {exc}") from exc
    return path
