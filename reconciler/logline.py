"""Log lines for unattended runs: one per change or error, as ``key=value`` or JSON.

Pure: an event in, one line out. ``reconcile apply --cron`` writes them (changes
on stdout, errors and conflicts on stderr) so that cron mail, journald, syslog
and log shippers can index them by ``server=``, ``repository=``, ``action=`` and
``result=``.

    time=2025-11-25T10:00:00Z level=info server=beta repository=product subject=ref
    action=change result=ok msg="product: push refs/heads/main on gamma (from beta)"
"""

from __future__ import annotations

import json
import time as clock
from dataclasses import dataclass, replace
from typing import Literal

from reconciler.planning.model import Action, Note

LogFormat = Literal["logfmt", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("logfmt", "json")
# Subjects whose target starts with the repository's name.
REPOSITORY_SUBJECTS = ("admin", "repository", "remote", "hook", "ref")
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./@:,+()~")


@dataclass(frozen=True)
class LogEvent:
    level: Literal["info", "warning", "error"]
    message: str
    time: float
    server: str = ""
    repository: str = ""
    subject: str = ""
    action: str = ""
    result: str = ""
    error: str = ""

    def fields(self) -> list[tuple[str, str]]:
        """In a fixed order; empty fields are left out."""
        pairs = [
            ("time", clock.strftime("%Y-%m-%dT%H:%M:%SZ", clock.gmtime(self.time))),
            ("level", self.level),
            ("server", self.server),
            ("repository", self.repository),
            ("subject", self.subject),
            ("action", self.action),
            ("result", self.result),
            ("msg", self.message),
            ("error", self.error),
        ]
        return [(key, value) for key, value in pairs if value]


def logfmt_value(value: str) -> str:
    if value and all(c in _PLAIN for c in value):
        return value
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def format_event(event: LogEvent, log_format: LogFormat = "logfmt") -> str:
    """One line, without the newline."""
    if log_format == "json":
        return json.dumps(dict(event.fields()), ensure_ascii=False)
    return " ".join(f"{key}={logfmt_value(value)}" for key, value in event.fields())


def repository_of(subject: str, target: str) -> str:
    if subject in REPOSITORY_SUBJECTS:
        return target.split(" ", 1)[0]
    return ""


def action_event(action: Action, ok: bool, error: str, now: float) -> LogEvent:
    return LogEvent(
        level="info" if ok else "error",
        message=action.description,
        time=now,
        server=action.server,
        repository=repository_of(action.subject, action.target),
        subject=action.subject,
        action=action.kind,
        result="ok" if ok else "failed",
        error=error,
    )


def pending_event(action: Action, now: float) -> LogEvent:
    """An action still planned after apply: the cluster did not converge."""
    return replace(action_event(action, True, "", now), level="warning", result="pending")


def note_event(note: Note, now: float) -> LogEvent:
    """A conflict or an error of the plan."""
    return LogEvent(
        level="error" if note.level == "error" else "warning",
        message=note.message,
        time=now,
        server=note.server,
        repository=repository_of(note.subject, note.target),
        subject=note.subject,
        result=note.level,
    )


def message_event(level: Literal["info", "warning", "error"], message: str, now: float) -> LogEvent:
    return LogEvent(
        level=level, message=message, time=now, result="error" if level == "error" else ""
    )
