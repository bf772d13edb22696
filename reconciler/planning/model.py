"""The plan as a value: actions, notes, and what they add up to.

An ``Action`` says what will change (server, subject, kind, one line for a person)
and carries the operations that do it as data (``ops``: JSON-able dicts executed by
``reconciler/remote/execute.py`` on the server, argv lists inside, never shell
strings). A ``Note`` is a no-op with its reason, a warning, or a conflict that
needs a human.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any, Literal

PLAN_FORMAT_VERSION = 1

Kind = Literal["create", "change", "remove"]
SYMBOLS: dict[str, str] = {"create": "+", "change": "~", "remove": "-"}

# The operator's side (the admin checkout) is shown as this pseudo-server.
ADMIN_CHECKOUT = "(admin checkout)"


class Phase(IntEnum):
    """Apply runs phase by phase, gathering facts again between them."""

    BOOTSTRAP = 0  # the git user and its gitosis, on a bare server
    SERVER_KEYS = 1
    ADMIN = 2
    CONFIGURATION = 3  # known_hosts, settings, repositories, remotes, hooks
    REFS = 4


SUBJECT_ORDER = {
    "bootstrap": -2,
    "library": -1,
    "server-key": 0,
    "admin": 1,
    "known_hosts": 2,
    "settings": 3,
    "repository": 4,
    "remote": 5,
    "hook": 6,
    "queue": 7,
    "ref": 8,
    # After the repositories whose files they are, in the same phase.
    "repository-settings": 9,
}


@dataclass(frozen=True)
class Action:
    server: str
    subject: str
    kind: Kind
    target: str
    description: str
    phase: Phase
    ops: tuple[dict[str, Any], ...] = ()

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.kind]

    def sort_key(self) -> tuple[int, str, int, str, str]:
        order = SUBJECT_ORDER.get(self.subject, 99)
        return (self.phase, self.server, order, self.target, self.description)

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "subject": self.subject,
            "kind": self.kind,
            "target": self.target,
            "description": self.description,
            "phase": int(self.phase),
        }


NoteLevel = Literal["info", "unmanaged", "warning", "conflict", "error"]


@dataclass(frozen=True)
class Note:
    """A no-op with its reason, something to look at, or a conflict."""

    server: str
    subject: str
    target: str
    level: NoteLevel
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()
    notes: tuple[Note, ...] = ()
    servers: tuple[str, ...] = field(default=())

    @property
    def conflicts(self) -> tuple[Note, ...]:
        return tuple(n for n in self.notes if n.level == "conflict")

    @property
    def errors(self) -> tuple[Note, ...]:
        return tuple(n for n in self.notes if n.level == "error")

    def count(self, kind: Kind) -> int:
        return sum(1 for a in self.actions if a.kind == kind)

    def summary(self) -> str:
        conflicts = len(self.conflicts)
        text = (
            f"{self.count('create')} to create, {self.count('change')} to change, "
            f"{self.count('remove')} to remove, {conflicts} conflict{'s' if conflicts != 1 else ''}"
        )
        if self.errors:
            text += f", {len(self.errors)} error{'s' if len(self.errors) != 1 else ''}"
        return text

    def exit_code(self) -> int:
        """DESIGN.md's codes: 1 error, 3 conflicts, 2 changes pending, 0 in sync."""
        if self.errors:
            return 1
        if self.conflicts:
            return 3
        if self.actions:
            return 2
        return 0

    def by_server(self) -> dict[str, list[Action | Note]]:
        grouped: dict[str, list[Action | Note]] = {}
        for action in sorted(self.actions, key=Action.sort_key):
            grouped.setdefault(action.server, []).append(action)
        for note in self.notes:
            if note.level != "info":
                grouped.setdefault(note.server, []).append(note)
        return grouped

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": PLAN_FORMAT_VERSION,
            "summary": {
                "create": self.count("create"),
                "change": self.count("change"),
                "remove": self.count("remove"),
                "conflicts": len(self.conflicts),
                "errors": len(self.errors),
            },
            "actions": [a.to_json() for a in sorted(self.actions, key=Action.sort_key)],
            "notes": [n.to_json() for n in self.notes],
        }
