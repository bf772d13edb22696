"""The validated desired state: immutable values the rest of the program uses.

Built by ``reconciler.desired.load`` once every check has passed; nothing here
validates again. The dictionaries keep declaration order (files in name order,
keys in file order), which is also the order gitosis.conf is rendered in.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from reconciler.errors import Location
from reconciler.server.common import LOGIN_NAME

_HOST_LABEL_RE = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")
_SSH_URL_RE = re.compile(
    r"ssh://(?:(?P<user>[^@/]*)@)?(?P<host>\[[^\]/]*\]|[^:/\[\]]*)(?::(?P<port>[^/]*))?(?P<rest>.*)",
    re.DOTALL,
)


@dataclass(frozen=True)
class ServerURL:
    """Where a server is: over SSH, or a local directory acting as ~git."""

    kind: Literal["ssh", "local"]
    user: str | None = None
    host: str | None = None
    port: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        if self.kind == "local":
            return f"local:{self.path}"
        host = self.host or ""
        if ":" in host:
            host = f"[{host}]"
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"ssh://{user}{host}{port}"


def _host_problem(host: str) -> str | None:
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{host} is not an IPv6 address"
        return None
    if not host:
        return "it has no host name"
    if len(host) > 253 or not all(_HOST_LABEL_RE.fullmatch(part) for part in host.split(".")):
        return f"{host!r} is not a valid host name or address"
    return None


def parse_server_url(text: str, root: Path) -> ServerURL:
    """Parse ``ssh://[user@]host[:port]`` or ``local:PATH``.

    A relative local path is taken relative to ``root``, the directory holding
    cluster.d/. Raises ValueError with a one-sentence reason.
    """
    if text.startswith("local:"):
        raw = text[len("local:") :]
        if not raw:
            raise ValueError("the local: URL has no path")
        if "\x00" in raw or "\n" in raw:
            raise ValueError("the local: path contains a control character")
        path = Path(raw)
        if not path.is_absolute():
            path = root.absolute() / path
        return ServerURL(kind="local", path=str(Path(_normalise(path))))
    if not text.startswith("ssh://"):
        raise ValueError(f"the URL {text!r} is neither ssh://[user@]host[:port] nor local:PATH")
    match = _SSH_URL_RE.fullmatch(text)
    if match is None:  # pragma: no cover - the pattern matches every ssh:// string
        raise ValueError(f"the URL {text!r} is not ssh://[user@]host[:port]")
    user, host, port_text, rest = match.group("user", "host", "port", "rest")
    if rest not in ("", "/"):
        raise ValueError(
            f"the URL {text!r} has a path; give only ssh://[user@]host[:port] "
            "(the repositories directory is the server's 'repositories' key)"
        )
    # ssh://USER@host: what useradd accepts, plus upper case (any length, as ssh takes it).
    if user is not None and LOGIN_NAME.fullmatch(user) is None:
        raise ValueError(f"the user name {user!r} in the URL {text!r} is not valid")
    problem = _host_problem(host)
    if problem is not None:
        raise ValueError(f"the URL {text!r} is not usable: {problem}")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"the port {port_text!r} in the URL {text!r} is not 1-65535")
        port = int(port_text)
    if host.startswith("["):
        host = host[1:-1]
    return ServerURL(kind="ssh", user=user, host=host, port=port)


def _normalise(path: Path) -> str:
    # os.path.normpath, not resolve(): the directory need not exist yet.
    import os.path

    return os.path.normpath(path)


@dataclass(frozen=True)
class Replication:
    mode: Literal["sync", "async", "quorum"] = "sync"
    timeout: int = 30
    run_kept_hooks: bool = False


@dataclass(frozen=True)
class Cluster:
    name: str
    admin_repository: str = "gitosis-admin"
    mirror_group: str = "grp_mirror"
    replication: Replication = field(default_factory=Replication)


@dataclass(frozen=True)
class Server:
    name: str
    url: ServerURL
    peer_url: ServerURL
    repositories: str = "repositories"
    host_key: str | None = None
    identity: str | None = None
    # The git user to switch to after logging in as url's user (root or a sudoer);
    # None: url logs in as the git user itself.
    user: str | None = None

    @property
    def become(self) -> str | None:
        """The git user to switch to, when it is not the one url logs in as."""
        if self.user is None or self.user == self.url.user:
            return None
        return self.user


@dataclass(frozen=True)
class Repository:
    name: str
    description: str | None = None
    owner: str | None = None
    gitweb: bool | None = None
    daemon: bool | None = None


@dataclass(frozen=True)
class Group:
    name: str
    members: tuple[str, ...] = ()
    writable: tuple[str, ...] = ()
    readonly: tuple[str, ...] = ()


@dataclass(frozen=True)
class Desired:
    """Everything cluster.d/ and keydir/ declare, validated."""

    root: Path
    cluster: Cluster
    servers: dict[str, Server]
    repositories: dict[str, Repository]
    groups: dict[str, Group]
    users: dict[str, tuple[str, ...]]
    # Users whose keys come from cluster.d/ (rendered into keydir/), not from keydir/.
    inline_users: frozenset[str] = frozenset()
    # keydir/ files an earlier render wrote for users no longer declared inline: they
    # are not users any more, and render removes them.
    orphaned_key_files: tuple[str, ...] = ()
    # Where each server, repository, group and user was declared: ("servers", name) -> place.
    locations: dict[tuple[str, str], Location] = field(default_factory=dict)

    def quorum_summary(self) -> str:
        """What the replication mode means for writes, in one line."""
        mode = self.cluster.replication.mode
        count = len(self.servers)
        if mode != "quorum":
            return f"{mode}: {count} server{'s' if count != 1 else ''}"
        needed = count // 2 + 1
        tolerated = count - needed
        line = f"quorum: {count} servers, writes need {needed}, tolerates {tolerated} down"
        if count == 2:
            line += " (with two servers, any server down stops writes)"
        return line

    def mirrored_repositories(self) -> list[str]:
        """Every repository replicated to every server, the admin repository included."""
        return list(self._mirrored)

    @functools.cached_property
    def _mirrored(self) -> tuple[str, ...]:
        # Sorted once: every subject's planner asks for it, for every server.
        return tuple(sorted({*self.repositories, self.cluster.admin_repository}))

    def server_user(self, server_name: str) -> str:
        """The gitosis user name of a server's own key."""
        return f"git@{server_name}"

    def server_users(self) -> list[str]:
        return [self.server_user(name) for name in self.servers]
