"""``reconcile status``: replication health, ref by ref."""

from __future__ import annotations

import time
from pathlib import Path

from rich.markup import escape

from reconciler.commands.common import close_all, load_and_connect
from reconciler.commands.output import print_json, stdout

STYLES = {"behind": "yellow", "missing": "yellow", "diverged": "bold red"}


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def run(directory: Path, *, json_output: bool) -> int:
    from reconciler.gather import gather_facts
    from reconciler.refs import gather_ref_report
    from reconciler.replication import hook_digest
    from reconciler.status import build_status

    desired, transports = load_and_connect(directory, [], False)
    try:
        facts = gather_facts(desired, transports)
        refs = gather_ref_report(desired, facts, {n: transports[n] for n in facts.servers})
    finally:
        close_all(transports)
    report = build_status(desired, facts, refs, hook_digest())
    if json_output:
        print_json(report.to_json())
        return report.exit_code()
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
        if server.missing_repositories:
            problems.append(f"{len(server.missing_repositories)} repositories missing")
        if problems:
            console.print(f"[yellow]attention[/] {server.server}: {escape('; '.join(problems))}")
    console.print(f"Status: {escape(report.summary())}")
    return report.exit_code()
