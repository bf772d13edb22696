"""A cluster of bare repositories on this machine, each with the real hook installed
(the server library in each server's home, a stub in each repository, as apply makes them).

A server here is a directory acting as its repositories base: settings file,
queue, and bare repositories whose remotes are the other servers' paths. Pushes
go through real git, so the hook runs as it does on a server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reconciler.replication import settings_json
from reconciler.replication.queue import QueueEntry, read_queue
from reconciler.testing.library import install_server_library

NAMES = ("master", "mirror", "third")
REPOSITORIES = ("product", "tools/build-scripts")
WAIT_SECONDS = 30.0


def git_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GIT_") and k not in ("GITOSIS_USER", "RECONCILER_REPLICA")
    }
    env.update(
        HOME=str(home),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Tester",
        GIT_AUTHOR_EMAIL="tester@example.com",
        GIT_COMMITTER_NAME="Tester",
        GIT_COMMITTER_EMAIL="tester@example.com",
    )
    return env


def git(
    cwd: Path, *args: str, env: dict[str, str], check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
    )


def refs(repository: Path, env: dict[str, str]) -> dict[str, str]:
    out = git(repository, "for-each-ref", "--format=%(refname) %(objectname)", env=env).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def remote_lines(stderr: str) -> list[str]:
    """What the hook said to the pusher (git prefixes it with ``remote:``)."""
    return [
        line[len("remote: ") :].rstrip()
        for line in stderr.splitlines()
        if line.startswith("remote: ")
    ]


@dataclass
class Server:
    name: str
    base: Path

    def repository(self, name: str = "product") -> Path:
        return self.base / f"{name}.git"

    def queue(self) -> list[QueueEntry]:
        return read_queue(self.base)

    def write_settings(self, peers: Sequence[str], mode: str = "sync", timeout: float = 20) -> None:
        (self.base / ".reconciler").mkdir(parents=True, exist_ok=True)
        (self.base / ".reconciler/replication.json").write_bytes(
            settings_json(
                server=self.name,
                peers=peers,
                mirror_users=[f"git@{n}" for n in NAMES],
                mode=mode,
                timeout=timeout,
            )
        )


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]
    servers: dict[str, Server] = field(default_factory=dict)
    work: Path = Path()

    def __getitem__(self, name: str) -> Server:
        return self.servers[name]

    def commit(self, message: str, branch: str = "main") -> str:
        git(self.work, "checkout", "-q", "-B", branch, env=self.env)
        (self.work / "file.txt").write_text(message + "\n")
        git(self.work, "add", "file.txt", env=self.env)
        git(self.work, "commit", "-q", "-m", message, env=self.env)
        return git(self.work, "rev-parse", "HEAD", env=self.env).stdout.strip()

    def push(
        self, server: str, *refspecs: str, repository: str = "product", **extra_env: str
    ) -> tuple[subprocess.CompletedProcess[str], float]:
        env = {**self.env, **extra_env}
        started = time.monotonic()
        result = git(
            self.work,
            "push",
            str(self.servers[server].repository(repository)),
            *refspecs,
            env=env,
            check=False,
        )
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        return result, elapsed

    def refs(self, server: str, repository: str = "product") -> dict[str, str]:
        return refs(self.servers[server].repository(repository), self.env)

    def set_remote(self, server: str, peer: str, url: str, repository: str = "product") -> None:
        git(
            self.servers[server].repository(repository),
            "config",
            f"remote.{peer}.url",
            url,
            env=self.env,
        )


def build_cluster(
    root: Path,
    names: Sequence[str] = NAMES,
    mode: str = "sync",
    timeout: float = 20,
    python: str = "python3",
) -> Cluster:
    home = root / "home"
    home.mkdir(parents=True)
    cluster = Cluster(root=root, env=git_env(home))
    hooks = {}
    for name in names:
        server = Server(name, root / name / "repositories")
        server.base.mkdir(parents=True)
        server.write_settings([n for n in names if n != name], mode=mode, timeout=timeout)
        cluster.servers[name] = server
        # The server's home is root/NAME: the library goes there, as apply puts it.
        hooks[name] = install_server_library(root / name, python=python)
    for server in cluster.servers.values():
        hook = hooks[server.name]
        for repository in REPOSITORIES:
            path = server.repository(repository)
            path.parent.mkdir(parents=True, exist_ok=True)
            git(root, "init", "-q", "--bare", "-b", "main", str(path), env=cluster.env)
            hook_path = path / "hooks" / "post-receive"
            hook_path.write_bytes(hook)
            hook_path.chmod(0o755)
            for peer in cluster.servers.values():
                if peer is not server:
                    # As apply makes them: a URL and no fetch refspec, so that a
                    # push does not leave refs/remotes/* in a server's repository.
                    git(
                        path,
                        "config",
                        f"remote.{peer.name}.url",
                        str(peer.repository(repository)),
                        env=cluster.env,
                    )
    cluster.work = root / "work"
    git(root, "init", "-q", "-b", "main", str(cluster.work), env=cluster.env)
    return cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    return build_cluster(tmp_path)


def wait_until(condition: object, timeout: float = WAIT_SECONDS, what: str = "") -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")


def live_processes(*needles: str) -> list[tuple[int, list[str]]]:
    """Processes (not zombies) with every one of ``needles`` in some argv element."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state = stat.rpartition(")")[2].split()[0]
        words = [a.decode(errors="replace") for a in argv if a]
        if state != "Z" and all(any(n in w for w in words) for n in needles):
            found.append((int(entry.name), words))
    return found


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections and never says a word."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
        for connection in accepted:
            connection.close()


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port
