"""The project's own exceptions.

Every error a user can cause is a ``ReconcilerError``: the CLI prints its message
(one sentence naming the file and line, the server or the repository) to stderr
and exits with its ``exit_code``. Anything else is a bug and may show a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Location:
    """A place in an input file; line and column are 1-based, 0 when unknown."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line and self.column:
            return f"{self.file}:{self.line}:{self.column}"
        if self.line:
            return f"{self.file}:{self.line}"
        return self.file


class ReconcilerError(Exception):
    """An error to report to the user as one clear sentence."""

    exit_code = 1

    def __init__(self, message: str, location: Location | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location

    def __str__(self) -> str:
        if self.location is None:
            return self.message
        return f"{self.location}: {self.message}"


class ConfigErrors(ReconcilerError):
    """Several problems found in the desired state, reported together."""

    def __init__(self, errors: list[ReconcilerError]) -> None:
        self.errors = sorted(errors, key=lambda e: (e.location or Location(""), e.message))
        super().__init__("\n".join(str(e) for e in self.errors))

    def __str__(self) -> str:
        return self.message


class ServerError(ReconcilerError):
    """A server could not be reached or a command on it failed."""

    def __init__(self, server: str, message: str) -> None:
        super().__init__(f"server {server}: {message}")
        self.server = server


class HostKeyError(ServerError):
    """A server's host key is unknown or changed: possibly not the server at all."""
