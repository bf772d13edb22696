"""The plan as a value: actions, notes, and what they add up to.

An ``Action`` says what will change (server, subject, kind, one line for a person)
and carries the operations that do it as data (``ops``: the typed values of
``reconciler.server.ops``, carried out by ``reconciler.server.execute`` on the
server from their JSON; no shell strings). A ``Note`` is a no-op with its reason,
a warning, or a conflict that needs a human.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any, Literal

from reconciler import subjects
from reconciler.server.ops import Op, decode

PLAN_FORMAT_VERSION = 1

# Strings at least this long in ops (the hook, runtime files) are written once, in
# the plan's "blobs", and referred to by digest: 3 x 1,000 hook installs are one copy.
BLOB_MIN = 1024
BLOB_KEY = "@blob"

Kind = Literal["create", "change", "remove"]
SYMBOLS: dict[str, str] = {"create": "+", "change": "~", "remove": "-"}

# The operator's side (the admin checkout) is shown as this pseudo-server.
ADMIN_CHECKOUT = "(admin checkout)"


class Phase(IntEnum):
    """Apply runs phase by phase, gathering facts again between them."""

    BOOTSTRAP = 0  # the git user and its gitosis, on a bare server
    SERVER_KEYS = 1
    ADMIN = 2
    CONFIGURATION = 3  # known_hosts, ssh config, settings, repositories, remotes, hooks
    REFS = 4


# A subject that registers itself (reconciler.subjects) gives its order there.
SUBJECT_ORDER = {
    "bootstrap": -2,
    "library": -1,
    "server-key": 0,
    "admin": 1,
    "known_hosts": 2,
    "ssh-config": 2,
    "settings": 3,
    # Before the repositories: those apply creates start from it too.
    "template": 3,
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
    ops: tuple[Op, ...] = ()

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.kind]

    def sort_key(self) -> tuple[int, str, int, str, str]:
        order = SUBJECT_ORDER.get(self.subject)
        if order is None:
            registered = subjects.order(self.subject)
            order = 99 if registered is None else registered
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

    @classmethod
    def from_json(cls, data: dict[str, Any], blobs: dict[str, str]) -> Action:
        kind = data["kind"]
        if kind not in SYMBOLS:
            raise ValueError(f"unknown action kind {kind!r}")
        return cls(
            server=str(data["server"]),
            subject=str(data["subject"]),
            kind=kind,
            target=str(data["target"]),
            description=str(data["description"]),
            phase=Phase(int(data["phase"])),
            ops=tuple(decode(unpack_blobs(op, blobs)) for op in data["ops"]),
        )


class BlobPacker:
    """Replaces long strings by ``{"@blob": sha256}`` and collects them once each.

    The same string object (one hook for every repository) is hashed only once."""

    def __init__(self) -> None:
        self.blobs: dict[str, str] = {}
        self._digests: dict[int, tuple[str, str]] = {}

    def digest(self, text: str) -> str:
        known = self._digests.get(id(text))
        if known is not None and known[1] is text:
            return known[0]
        value = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        self._digests[id(text)] = (value, text)
        self.blobs.setdefault(value, text)
        return value

    def pack(self, value: Any) -> Any:
        if isinstance(value, str):
            return {BLOB_KEY: self.digest(value)} if len(value) >= BLOB_MIN else value
        if isinstance(value, dict):
            return {key: self.pack(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.pack(item) for item in value]
        return value

    def action(self, action: Action) -> dict[str, Any]:
        return {**action.to_json(), "ops": [self.pack(op.to_json()) for op in action.ops]}

    def key(self, action: Action) -> str:
        """The action as canonical JSON, long strings by digest: equal keys, equal actions."""
        return json.dumps(self.action(action), sort_keys=True, separators=(",", ":"))


def unpack_blobs(value: Any, blobs: dict[str, str]) -> Any:
    """The inverse of ``BlobPacker.pack``: every reference becomes the one string."""
    if isinstance(value, dict):
        if set(value) == {BLOB_KEY}:
            return blobs[str(value[BLOB_KEY])]
        return {key: unpack_blobs(item, blobs) for key, item in value.items()}
    if isinstance(value, list):
        return [unpack_blobs(item, blobs) for item in value]
    return value


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

    def to_json(self, *, with_ops: bool = False) -> dict[str, Any]:
        """The plan as data; ``with_ops`` adds each action's operations (long strings
        once each, under ``blobs``) and the servers it changes: all apply needs."""
        actions = sorted(self.actions, key=Action.sort_key)
        packer = BlobPacker()
        data = {
            "format_version": PLAN_FORMAT_VERSION,
            "summary": {
                "create": self.count("create"),
                "change": self.count("change"),
                "remove": self.count("remove"),
                "conflicts": len(self.conflicts),
                "errors": len(self.errors),
            },
            "actions": [packer.action(a) if with_ops else a.to_json() for a in actions],
            "notes": [n.to_json() for n in self.notes],
        }
        if with_ops:
            data["servers"] = list(self.servers)
            data["blobs"] = packer.blobs
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        """The inverse of ``to_json(with_ops=True)``; raises KeyError, TypeError or
        ValueError on anything else."""
        blobs = {str(k): str(v) for k, v in data["blobs"].items()}
        notes = []
        for note in data["notes"]:
            if note["level"] not in ("info", "unmanaged", "warning", "conflict", "error"):
                raise ValueError(f"unknown note level {note['level']!r}")
            notes.append(
                Note(
                    str(note["server"]),
                    str(note["subject"]),
                    str(note["target"]),
                    note["level"],
                    str(note["message"]),
                )
            )
        return cls(
            actions=tuple(Action.from_json(a, blobs) for a in data["actions"]),
            notes=tuple(notes),
            servers=tuple(str(s) for s in data["servers"]),
        )
