"""Terminal output shared by the commands: plans, results, errors (rich)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.markup import escape

from reconciler.logline import (
    LogEvent,
    LogFormat,
    action_event,
    format_event,
    message_event,
    note_event,
    pending_event,
)
from reconciler.planning.model import Action, Note, Plan
from reconciler.report import Reporter

STYLES = {"+": "green", "~": "yellow", "-": "red"}
NOTE_MARKS = {"warning": ("!", "yellow"), "conflict": ("✗", "bold red"), "error": ("✗", "bold red")}


def stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


class ConsoleReporter(Reporter):
    """Reports progress on stderr (transient lines) and results on stdout."""

    def __init__(self, *, quiet: bool = False, progress: bool = True) -> None:
        self.out = stdout()
        self.err = stderr()
        self.quiet = quiet
        self.show_progress = progress and not quiet

    def info(self, message: str) -> None:
        if not self.quiet:
            self.out.print(escape(message))

    def warning(self, message: str) -> None:
        self.err.print(f"[yellow]warning:[/] {escape(message)}")

    def progress(self, message: str) -> None:
        if self.show_progress and self.err.is_terminal:
            self.err.print(f"[dim]{escape(message)}…[/]")


def print_replication(summary: str, console: Console | None = None) -> None:
    """What an acknowledged push means in this cluster, before the plan or status."""
    (console or stdout()).print(f"[dim]Replication: {escape(summary)}[/]")


def print_plan(plan: Plan, console: Console | None = None) -> None:
    console = console or stdout()
    grouped = plan.by_server()
    unmanaged: dict[str, list[str]] = {}
    for note in plan.notes:
        if note.level == "unmanaged":
            unmanaged.setdefault(note.server, []).append(note.target)
    for server in sorted(set(grouped) | set(unmanaged)):
        console.print(f"[bold]{escape(server)}[/]")
        for item in grouped.get(server, []):
            if isinstance(item, Action):
                style = STYLES[item.symbol]
                console.print(f"  [{style}]{item.symbol}[/] {escape(item.description)}")
            elif item.level != "unmanaged":
                mark, style = NOTE_MARKS.get(item.level, ("·", "dim"))
                console.print(f"  [{style}]{mark}[/] {escape(_note_text(item))}")
        if server in unmanaged:
            names = unmanaged[server]
            shown = ", ".join(names[:10]) + (
                f", … ({len(names) - 10} more)" if len(names) > 10 else ""
            )
            console.print(
                f"  [dim]· {len(names)} unmanaged repositories "
                f"(not in cluster.d/): {escape(shown)}[/]"
            )
    if not plan.actions and not plan.conflicts and not plan.errors:
        console.print("No changes: every server matches cluster.d/.")
    console.print(f"Plan: {plan.summary()}")


def print_errors(plan: Plan) -> None:
    """Each error of the plan (an unreachable server, a refused admin history) on
    stderr, one sentence each, whatever was printed on stdout."""
    console = stderr()
    for note in plan.errors:
        console.print(f"[bold red]error:[/] {escape(_note_text(note))}")


def _note_text(note: Note) -> str:
    return note.message


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


class LogReporter(Reporter):
    """Cron mode: one log line per change or error (``reconciler.logline``); changes
    on stdout, errors and warnings on stderr; nothing at all when nothing happened."""

    def __init__(self, log_format: LogFormat = "logfmt") -> None:
        self.log_format = log_format

    def emit(self, event: LogEvent) -> None:
        stream = sys.stdout if event.level == "info" else sys.stderr
        stream.write(format_event(event, self.log_format) + "\n")
        stream.flush()

    def info(self, message: str) -> None:
        self.emit(message_event("info", message, time.time()))

    def warning(self, message: str) -> None:
        self.emit(message_event("warning", message, time.time()))

    def error(self, message: str) -> None:
        self.emit(message_event("error", message, time.time()))

    def action_done(self, action: Action, ok: bool, error: str = "") -> None:
        self.emit(action_event(action, ok, error, time.time()))

    def remaining(self, plan: Plan) -> None:
        """What apply left: conflicts, errors, and actions that are still planned."""
        now = time.time()
        for note in plan.notes:
            if note.level in ("conflict", "error"):
                self.emit(note_event(note, now))
        for action in sorted(plan.actions, key=Action.sort_key):
            self.emit(pending_event(action, now))
