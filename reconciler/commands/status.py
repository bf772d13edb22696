"""``reconcile status``: replication health, ref by ref."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from reconciler.commands.common import close_all, load_and_start_gather
from reconciler.commands.output import print_json, stdout
from reconciler.errors import ReconcilerError

if TYPE_CHECKING:
    from reconciler.status import StatusReport

STYLES = {"behind": "yellow", "missing": "yellow", "diverged": "bold red"}


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def run(
    directory: Path,
    *,
    json_output: bool = False,
    output_format: str | None = None,
    textfile: Path | None = None,
) -> int:
    """``output_format`` text, json or prometheus; with ``textfile`` alone nothing is
    printed (the metrics go to the file; the exit code says the rest)."""
    from reconciler.commands.textfile import (
        RunClock,
        check_directory,
        read_previous,
        write_textfile,
    )

    clock = RunClock()
    if json_output:
        output_format = "json"
    explicit_format = output_format is not None
    if textfile is not None:
        check_directory(textfile)
    try:
        report = _gather_status(directory)
    except ReconcilerError as exc:
        if textfile is not None:
            write_textfile(textfile, None, clock.finish(exc.exit_code, read_previous(textfile)))
        raise
    code = report.exit_code()
    run_info = clock.finish(code, read_previous(textfile))
    if textfile is not None:
        write_textfile(textfile, report, run_info)
        if not explicit_format:
            return code
    if output_format == "prometheus":
        from reconciler.metrics import exposition

        sys.stdout.write(exposition(report, run_info))
        return code
    if output_format == "json":
        print_json(report.to_json())
        return code
    print_report(report)
    return code


def _gather_status(directory: Path) -> StatusReport:
    from reconciler.pipeline import observe
    from reconciler.status import build_status

    desired, transports, started = load_and_start_gather(directory, [], False)
    try:
        observed = observe(desired, transports, started=started)
    finally:
        close_all(transports)
    return build_status(desired, observed.facts, observed.refs)


def print_report(report: StatusReport) -> None:
    console = stdout()
    for state in report.refs:
        style = STYLES.get(state.status, "")
        values = "  ".join(
            f"{server}={value[:12] if value else '(absent)'}"
            + ("*" if value is not None and value == state.tip else "")
            for server, value in state.values.items()
        )
        console.print(
            f"[{style}]{state.status:8}[/] {escape(state.repository)} {escape(state.ref)}  "
            f"{escape(values)}"
        )
    now = time.time()
    for server in report.servers:
        if not server.reachable:
            console.print(f"[bold red]unreachable[/] {server.server}: {escape(server.error)}")
            continue
        problems = []
        if server.queue_depth:
            oldest = (
                f", oldest {_age(now - server.oldest_entry)} old" if server.oldest_entry else ""
            )
            problems.append(f"{server.queue_depth} queued update(s){oldest}")
        if server.queue_problems:
            problems.append(f"{server.queue_problems} unreadable queue file(s)")
        if server.stale_hooks:
            problems.append(f"hook missing or outdated in {len(server.stale_hooks)} repositories")
        if server.aborted:
            shown = ", ".join(server.aborted[:5]) + (" ..." if len(server.aborted) > 5 else "")
            problems.append(
                f"{len(server.aborted)} value(s) no majority took, kept under "
                f"refs/reconciler/aborted/: {shown}"
            )
        if server.missing_repositories:
            problems.append(f"{len(server.missing_repositories)} repositories missing")
        if problems:
            console.print(f"[yellow]attention[/] {server.server}: {escape('; '.join(problems))}")
    # One line when all is well, the mode and what it tolerates included.
    mode = f"; replication {report.replication}" if report.replication else ""
    console.print(f"Status: {escape(report.summary() + mode)}")
