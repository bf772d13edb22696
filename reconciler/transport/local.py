"""A directory on this machine acting as a server's git user home (``local:PATH``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from reconciler.errors import ServerError
from reconciler.server.common import without_repository_env
from reconciler.transport import CommandResult, Stdin, TransportStats


class LocalTransport:
    """Runs commands here with HOME set to the server's directory."""

    def __init__(self, server: str, home: Path) -> None:
        self.server = server
        self.home = home
        self.stats = TransportStats()

    def _env(self) -> dict[str, str]:
        env = without_repository_env(os.environ)
        env["HOME"] = str(self.home)
        # The runtime's commands (gitosis-run-hook and friends) live beside this Python.
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        return env

    def run(
        self,
        argv: list[str],
        *,
        stdin: Stdin = b"",
        timeout: float | None = None,
        as_admin: bool = False,
    ) -> CommandResult:
        if as_admin:
            raise ServerError(self.server, "a local: server has no admin to act as")
        if not self.home.is_dir():
            raise ServerError(self.server, f"directory {self.home} does not exist")
        self.stats.commands += 1
        if argv and argv[0] == "python3":
            argv = [sys.executable, *argv[1:]]
        try:
            done = subprocess.run(
                argv,
                # All of it before the program starts: a local program is not worth
                # starting early.
                input=stdin if isinstance(stdin, bytes) else b"".join(stdin),
                capture_output=True,
                cwd=self.home,
                env=self._env(),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServerError(self.server, f"{argv[0]} timed out after {timeout}s") from exc
        except OSError as exc:
            raise ServerError(self.server, f"cannot run {argv[0]}: {exc.strerror}") from exc
        return CommandResult(done.returncode, done.stdout, done.stderr)

    def host_key_line(self) -> str | None:
        return None

    def close(self) -> None:
        pass
