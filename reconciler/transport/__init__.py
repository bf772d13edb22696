"""Running programs on a server: the only way the core touches one.

A ``Transport`` runs an argv list on one server (with stdin bytes, a timeout) and
returns what it printed. Two implementations: ``ssh`` (paramiko, strict host-key
checking) and ``local`` (a directory on this machine acts as the git user's home).
Only the transport modules import paramiko.

Server-side work is done by stdlib-only Python programs assembled from
``reconciler.server`` and sent over the channel together with their input
(``run_program``), so one round trip does what would otherwise take one command per
repository.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from reconciler.server_library import program_blob

# Reads the program (a zlib-compressed JSON blob whose length is argv[1]) from stdin,
# leaving the rest of stdin (the program's input) unread for it, and runs the loader
# it carries (``reconciler.server_library.LOADER``). One line: gitosis-serve, which
# answers a key bound to it, refuses a command with a newline before saying why.
BOOTSTRAP = (
    "import sys,json,zlib;b=json.loads(zlib.decompress(sys.stdin.buffer.read("
    "int(sys.argv.pop(1)))));exec(b['loader'],{'b':b})"
)


# A server reached as an admin (root or a sudoer) acting as a git user that does
# not exist yet answers with this status and marker instead of running anything.
NO_GIT_USER_STATUS = 97
NO_GIT_USER_MARKER = "reconciler: no such git user: "


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace").strip()


@dataclass
class TransportStats:
    """Counted for tests and benchmarks: connections made and commands run."""

    connections: int = 0
    commands: int = 0
    programs: list[str] = field(default_factory=list)


# A command's input: bytes, or parts sent one by one as the iterable yields them (a
# later part may wait for something the operator is still working out).
Stdin = bytes | Iterable[bytes]


class Transport(Protocol):
    server: str
    stats: TransportStats

    def run(
        self,
        argv: list[str],
        *,
        stdin: Stdin = b"",
        timeout: float | None = None,
        as_admin: bool = False,
    ) -> CommandResult:
        """Run ``argv`` on the server as the git user, in its home directory; with
        ``as_admin``, as root (only on a server logged in to as root or a sudoer)."""

    def host_key_line(self) -> str | None:
        """The server's host key as ``TYPE BASE64`` (None for local servers)."""

    def close(self) -> None: ...


def program_source(name: str) -> bytes:
    """What is sent of the server-side program ``name``: its modules, as one blob."""
    return program_blob(name)


def run_program(
    transport: Transport,
    name: str,
    args: list[str],
    payload: Any = None,
    *,
    timeout: float | None = None,
    python: str = "python3",
    as_admin: bool = False,
    rest: Callable[[], Any] | None = None,
) -> CommandResult:
    """Run the server-side program ``name`` with ``args`` and a JSON ``payload``.

    Program and payload travel on stdin of one command: one round trip. With
    ``rest``, the payload is one line and the program starts on it; what ``rest()``
    returns (it may wait) follows as a second JSON document, then the input ends.
    """
    source = program_source(name)
    data = b"" if payload is None else json.dumps(payload).encode()
    transport.stats.programs.append(name)
    stdin: Stdin = source + data
    if rest is not None:
        stdin = _in_two_parts(source + data + b"\n", rest)
    return transport.run(
        [python, "-c", BOOTSTRAP, str(len(source)), *args],
        stdin=stdin,
        timeout=timeout,
        as_admin=as_admin,
    )


def _in_two_parts(first: bytes, rest: Callable[[], Any]) -> Iterator[bytes]:
    yield first
    yield json.dumps(rest()).encode()
