"""What a server is like now: the typed form of the gather program's JSON.

``parse_server_facts`` is the pure parser for ``reconciler/remote/gather.py``'s
output; test it on recorded output. ``Facts`` holds every server's facts, or the
error that kept the reconciler from reading one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from reconciler import subjects as registry
from reconciler.errors import ReconcilerError

# One definition of these facts for both sides: the server's fact reader builds them.
from reconciler.server.keys import KeyPair as KeyPair
from reconciler.server.library import GitosisFacts as GitosisFacts
from reconciler.server.library import LibraryFacts as LibraryFacts
from reconciler.server.queue import QueueEntry
from reconciler.server.wire import WireError

GATHER_FORMAT_VERSION = 1
T = TypeVar("T")


@dataclass(frozen=True)
class RemoteFacts:
    url: str | None
    fetch: tuple[str, ...] = ()
    pushurl: str | None = None
    mirror: str | None = None
    managed: bool = False


@dataclass(frozen=True)
class HookFacts:
    mode: int
    uid: int
    sha256: str | None
    managed: bool
    symlink: bool = False


@dataclass(frozen=True)
class RepositoryFacts:
    name: str
    head: str
    bare: bool
    remotes: dict[str, RemoteFacts]
    hook: HookFacts | None
    refs_digest: str
    ref_count: int
    refs: dict[str, str] | None = None
    # hooks/proc-receive (quorum mode) and an old hooks/reference-transaction link:
    # None absent, a symlink's target, or "file"; receive.procReceiveRefs's values.
    proc_receive_hook: str | None = None
    transaction_hook: str | None = None
    proc_receive_refs: tuple[str, ...] = ()
    # REF.lock files git left (a push killed while it held the lock): (ref, age seconds).
    ref_locks: tuple[tuple[str, float], ...] = ()
    # Values quorum repair kept under refs/reconciler/aborted/ (never acknowledged).
    aborted: tuple[str, ...] = ()
    export_ok: bool = False  # git-daemon-export-ok exists


@dataclass(frozen=True)
class RepoSectionFacts:
    """How gitosis finds a ``[repo NAME]`` of the rendered gitosis.conf on this server."""

    plain: bool = False  # repositories/NAME exists (gitosis tries it before NAME.git)
    description: str | None = None  # the description file gitosis would replace


@dataclass(frozen=True)
class Commit:
    sha: str
    parents: tuple[str, ...]
    committer: str


@dataclass(frozen=True)
class AdminFacts:
    exists: bool
    branch: str = "master"
    head: str | None = None
    history: tuple[Commit, ...] = ()
    post_update_hook: bool = False
    post_update_pending: bool = False  # an apply died before gitosis's hook finished

    @property
    def only_init_commit(self) -> bool:
        """The repository holds just the single root commit gitosis-init made."""
        return (
            len(self.history) == 1
            and not self.history[0].parents
            and self.history[0].committer == "Gitosis Admin"
        )


@dataclass(frozen=True)
class PushStats:
    """The replication hook's pushes to one peer (reconciler/replication/pushes.py)."""

    count: int  # every push recorded, ever (while the record file lives)
    sum: float  # their seconds, summed
    results: dict[str, int]  # "ok" or the reason a push failed -> pushes
    recent: tuple[float, ...] = ()  # durations of the pushes of the last hour


@dataclass(frozen=True)
class GitTemplateFacts:
    """``init.templateDir`` in the git user's ~/.gitconfig, and, when it names one of
    the reconciler's templates, the digest of what that directory holds."""

    configured: str | None = None
    digest: str | None = None


@dataclass(frozen=True)
class ServerFacts:
    server: str
    home: str
    uid: int
    user: str
    server_key: str | None
    server_key_private: bool
    ssh_dir_mode: int | None
    known_hosts: tuple[str, ...]
    authorized_keys: tuple[str, ...]
    repositories_dir: str
    repositories_exists: bool
    settings: dict[str, Any] | None
    settings_text: str | None
    queue: tuple[QueueEntry, ...]  # valid entries; their file names in ``name``
    queue_errors: tuple[str, ...]
    repositories: dict[str, RepositoryFacts]
    admin: AdminFacts
    host_key: str | None = None  # as seen by the operator's connection
    seconds: float = 0.0
    # Repositories whose facts came from the server's cache (reconciler.server.fact_cache).
    fact_cache_hits: int = 0
    gitosis: GitosisFacts = field(default_factory=GitosisFacts)
    library: LibraryFacts = field(default_factory=LibraryFacts)
    pushes: dict[str, PushStats] = field(default_factory=dict)  # peer -> its pushes
    repo_sections: dict[str, RepoSectionFacts] = field(default_factory=dict)
    projects_list: str | None = None  # gitweb's list as gitosis writes it; None: absent
    key_pairs: tuple[KeyPair, ...] = ()
    git_version: tuple[int, ...] | None = None  # None: unknown (git missing or unreadable)
    git_template: GitTemplateFacts = field(default_factory=GitTemplateFacts)
    ssh_config: tuple[str, ...] | None = None  # ~/.ssh/config's lines; None: no file
    # The facts of the subjects that declare them (reconciler.subjects): key -> the
    # value its parser made. Read with ``fact``.
    subjects: Mapping[str, object] = field(default_factory=dict)

    def fact(self, fact: registry.Fact[T]) -> T:
        """A registered fact's value; what its parser makes of an absent key when the
        facts do not hold it (made by hand, in a test)."""
        if fact.key not in self.subjects:
            return fact.parse(None)
        # parse_server_facts stored fact.parse's result under fact.key, and a key
        # belongs to one fact only (reconciler.subjects refuses a second).
        return cast(T, self.subjects[fact.key])


@dataclass(frozen=True)
class Facts:
    servers: dict[str, ServerFacts] = field(default_factory=dict)
    errors: dict[str, ReconcilerError] = field(default_factory=dict)
    # Servers reached as an admin whose git user does not exist yet: server -> user.
    missing_git_users: dict[str, str] = field(default_factory=dict)
    # Host keys of those servers, as the operator's connection saw them.
    missing_host_keys: dict[str, str] = field(default_factory=dict)

    def host_key(self, server: str) -> str | None:
        """The server's host key as its connection saw it, if it was reached."""
        if server in self.servers:
            return self.servers[server].host_key
        return self.missing_host_keys.get(server)


# The keys of a remote with nothing but a URL (and the reconciler's mark): every
# peer remote of a converged cluster, 20,000 per server at 10,000 repositories.
_PLAIN_REMOTE = frozenset({"url", "managed"})
# The keys of a repository with nothing unusual about it (no refs asked for, no
# quorum hooks, no locks, not exported): decided by one subset test, then built
# without asking for each optional key in turn.
_PLAIN_REPOSITORY = frozenset({"head", "bare", "remotes", "hook", "refs_digest", "ref_count"})


def _remote(data: dict[str, Any]) -> RemoteFacts:
    if data.keys() <= _PLAIN_REMOTE:
        # The same values as below, the absent keys' defaults written out.
        return RemoteFacts(data.get("url"), (), None, None, bool(data.get("managed")))
    return RemoteFacts(
        url=data.get("url"),
        fetch=tuple(data.get("fetch") or ()),
        pushurl=data.get("pushurl"),
        mirror=data.get("mirror"),
        managed=bool(data.get("managed")),
    )


def _hook(data: dict[str, Any], seen: dict[tuple[Any, ...], HookFacts]) -> HookFacts:
    # Nearly every repository has the same hook (the stub): one value shared by all of
    # them, not one object per repository (10,000 of them per server).
    key = (data["mode"], data["uid"], data.get("sha256"), data.get("managed"), data.get("symlink"))
    hook = seen.get(key)
    if hook is None:
        hook = seen[key] = HookFacts(
            mode=int(data["mode"]),
            uid=int(data["uid"]),
            sha256=data.get("sha256"),
            managed=bool(data.get("managed")),
            symlink=bool(data.get("symlink")),
        )
    return hook


def _repository(
    name: str, data: dict[str, Any], hooks: dict[tuple[Any, ...], HookFacts]
) -> RepositoryFacts:
    hook = data.get("hook")
    if data.keys() <= _PLAIN_REPOSITORY:
        # The same values as below, the absent keys' defaults written out.
        return RepositoryFacts(
            name,
            str(data.get("head", "")),
            bool(data.get("bare", True)),
            {remote: _remote(value) for remote, value in data["remotes"].items()},
            _hook(hook, hooks) if hook else None,
            str(data["refs_digest"]),
            int(data.get("ref_count", 0)),
        )
    return RepositoryFacts(
        name=name,
        head=str(data.get("head", "")),
        bare=bool(data.get("bare", True)),
        remotes={remote: _remote(value) for remote, value in data["remotes"].items()},
        hook=_hook(hook, hooks) if hook else None,
        refs_digest=str(data["refs_digest"]),
        ref_count=int(data.get("ref_count", 0)),
        refs=dict(data["refs"]) if data.get("refs") is not None else None,
        proc_receive_hook=data.get("proc_receive_hook"),
        transaction_hook=data.get("transaction_hook"),
        proc_receive_refs=tuple(str(v) for v in data.get("proc_receive_refs") or ()),
        ref_locks=tuple((str(r), float(a)) for r, a in data.get("ref_locks") or ()),
        aborted=tuple(str(r) for r in data.get("aborted") or ()),
        export_ok=bool(data.get("export_ok")),
    )


def parse_server_facts(
    server: str, data: dict[str, Any], host_key: str | None = None
) -> ServerFacts:
    """Turn the gather program's JSON into ``ServerFacts``; raises on a foreign format."""
    if data.get("format_version") != GATHER_FORMAT_VERSION:
        raise ReconcilerError(
            f"server {server}: the gather program answered in format "
            f"{data.get('format_version')!r}, expected {GATHER_FORMAT_VERSION}"
        )
    hooks: dict[tuple[Any, ...], HookFacts] = {}
    try:
        admin = data["admin"]
        return ServerFacts(
            server=server,
            home=str(data["home"]),
            uid=int(data["uid"]),
            user=str(data["user"]),
            server_key=data.get("server_key"),
            server_key_private=bool(data.get("server_key_private")),
            ssh_dir_mode=data.get("ssh_dir_mode"),
            known_hosts=tuple(data.get("known_hosts") or ()),
            ssh_config=(tuple(data["ssh_config"]) if data.get("ssh_config") is not None else None),
            authorized_keys=tuple(data.get("authorized_keys") or ()),
            repositories_dir=str(data["repositories_dir"]),
            repositories_exists=bool(data["repositories_exists"]),
            settings=data.get("settings"),
            settings_text=data.get("settings_text"),
            queue=tuple(
                QueueEntry.from_json(entry, name=str(entry["file"]))
                for entry in data.get("queue") or ()
            ),
            queue_errors=tuple(data.get("queue_errors") or ()),
            repositories={
                name: _repository(name, value, hooks)
                for name, value in data["repositories"].items()
            },
            admin=AdminFacts(
                exists=bool(admin.get("exists")),
                branch=str(admin.get("branch", "master")),
                head=admin.get("head"),
                history=tuple(
                    Commit(c["sha"], tuple(c["parents"]), c["committer"])
                    for c in admin.get("history", ())
                ),
                post_update_hook=bool(admin.get("post_update_hook")),
                post_update_pending=bool(admin.get("post_update_pending")),
            ),
            host_key=host_key,
            seconds=float(data.get("seconds", 0.0)),
            fact_cache_hits=int(data.get("fact_cache_hits", 0)),
            gitosis=GitosisFacts.from_json(data.get("gitosis") or {}, "gitosis"),
            library=LibraryFacts.from_json(data.get("library") or {}, "library"),
            pushes={
                str(peer): PushStats(
                    count=int(value["count"]),
                    sum=float(value["sum"]),
                    results={str(k): int(v) for k, v in value["results"].items()},
                    recent=tuple(float(s) for s in value["recent"]),
                )
                for peer, value in (data.get("pushes") or {}).items()
            },
            repo_sections={
                name: RepoSectionFacts(
                    plain=bool(value.get("plain")), description=value.get("description")
                )
                for name, value in (data.get("repo_sections") or {}).items()
            },
            projects_list=data.get("projects_list"),
            key_pairs=tuple(
                KeyPair.from_json(pair, "key_pairs[]") for pair in data.get("key_pairs") or ()
            ),
            git_version=(
                tuple(int(part) for part in data["git_version"])
                if data.get("git_version")
                else None
            ),
            git_template=GitTemplateFacts(
                configured=(data.get("git_template") or {}).get("configured"),
                digest=(data.get("git_template") or {}).get("digest"),
            ),
            subjects={fact.key: fact.parse(data.get(fact.key)) for fact in registry.facts()},
        )
    except WireError as exc:
        raise ReconcilerError(
            f"server {server}: the gather program's answer is malformed: {exc}"
        ) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise ReconcilerError(
            f"server {server}: the gather program's answer is malformed ({exc!r})"
        ) from exc
