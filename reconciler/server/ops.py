"""Every operation a plan can hold: one frozen dataclass per kind, the one definition
of its JSON for the planner that builds it, the saved plan that stores it, apply that
sends it and ``execute`` that carries it out (standard library only, Python 3.9).

On the wire an op is its fields plus ``"op": KIND`` (``Op.to_json``); ``decode`` turns
such an object back into its class, refusing unknown kinds, unknown or missing
fields and values of the wrong type with one sentence. Each subject's module maps
the classes it handles to their handlers (``OPS``); paths are relative to the git
user's home, commands are argv lists built by the handlers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from reconciler.server.wire import Record, WireError

KINDS: dict[str, type[Op]] = {}
OpT = TypeVar("OpT", bound="Op")


@dataclasses.dataclass(frozen=True)
class Op(Record):
    KIND: ClassVar[str] = ""

    def __init_subclass__(cls, kind: str = "", **rest: Any) -> None:
        super().__init_subclass__(**rest)
        if kind:
            if kind in KINDS:
                raise TypeError(f"two operations named {kind!r}")
            cls.KIND = kind
            KINDS[kind] = cls

    def to_json(self) -> dict[str, Any]:
        return {"op": self.KIND, **super().to_json()}

    @classmethod
    def envelope(cls) -> frozenset[str]:
        return frozenset({"op"})


def decode(data: Any) -> Op:
    """The op a JSON object describes; WireError says what is wrong with it."""
    if not isinstance(data, dict):
        raise WireError(f"an operation must be an object, not {data!r:.80}")
    kind = data.get("op")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise WireError(f"unknown operation {kind!r}")
    return cls.from_json(data, cls.KIND)


def handler(
    cls: type[OpT], function: Callable[[OpT], None]
) -> tuple[type[Op], Callable[[Any], None]]:
    """One entry of a subject's ``OPS``: the type checker sees that ``function`` takes
    ``cls``."""
    return cls, function


# --- files (reconciler.server.files) ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WriteFile(Op, kind="write_file"):
    """Write ``content`` whole; with ``expect_sha256`` only over what the plan saw
    (a digest, or "absent")."""

    path: str
    content: str
    mode: int = 0o644
    expect_sha256: str | None = None
    dir_mode: int = 0o755


@dataclasses.dataclass(frozen=True)
class RemoveFile(Op, kind="remove_file"):
    path: str
    expect_sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class RemoveLeftovers(Op, kind="remove_leftovers"):
    """Remove temporaries that runs killed mid-write left (their makers are gone)."""

    paths: tuple[str, ...]


# --- known_hosts (reconciler.server.known_hosts) ---------------------------------------


@dataclasses.dataclass(frozen=True)
class EditLines(Op, kind="edit_lines"):
    """Add and remove whole lines of a file, keeping every other line."""

    path: str
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    mode: int = 0o600
    dir_mode: int = 0o700


# --- server key (reconciler.server.keys) -----------------------------------------------


@dataclasses.dataclass(frozen=True)
class Keygen(Op, kind="keygen"):
    comment: str


# --- admin repository (reconciler.server.admin) ----------------------------------------


@dataclasses.dataclass(frozen=True)
class GitosisInit(Op, kind="gitosis_init"):
    pubkey: str
    command: str | None = None  # None: the gitosis-init on the PATH


# admin_update's ``old`` for a branch gitosis-init has just made: its single commit.
INIT_COMMIT = "@INIT"


@dataclasses.dataclass(frozen=True)
class AdminUpdate(Op, kind="admin_update"):
    """The admin branch to ``new`` (from ``bundle``, base64) with compare-and-swap on
    ``old`` (None: absent; ``INIT_COMMIT``: gitosis-init's single commit). apply fills
    ``new`` and ``bundle`` in when the planner wrote the placeholders ``@HEAD`` and
    ``@BUNDLE``."""

    repo: str
    branch: str
    new: str
    bundle: str
    old: str | None = None
    pubkey: str | None = None
    init_command: str | None = None


@dataclasses.dataclass(frozen=True)
class LocalCommit(Op, kind="local_commit"):
    """Commit rendered files in the admin checkout: carried out by apply on the
    operator's side, never sent to a server."""

    files: dict[str, str]
    remove: tuple[str, ...] = ()


# --- repositories (reconciler.server.repositories) -------------------------------------


@dataclasses.dataclass(frozen=True)
class InitBare(Op, kind="init_bare"):
    path: str


@dataclasses.dataclass(frozen=True)
class CloneMirror(Op, kind="clone_mirror"):
    path: str
    url: str
    timeout: float = 3600.0


# --- remotes (reconciler.server.remotes) -----------------------------------------------


@dataclasses.dataclass(frozen=True)
class SetRemote(Op, kind="set_remote"):
    """One remote named after a peer, normalised; ``replace`` also drops what a
    foreign remote of that name had."""

    repo: str
    name: str
    url: str
    replace: bool = False


@dataclasses.dataclass(frozen=True)
class RemoveRemote(Op, kind="remove_remote"):
    repo: str
    name: str


# --- hooks (reconciler.server.hooks) ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InstallHook(Op, kind="install_hook"):
    """Write a hook stub, once the server library ``library`` it runs is installed."""

    path: str
    content: str
    library: str
    expect_sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class KeepFile(Op, kind="keep_file"):
    """Copy ``path`` (a foreign hook about to be replaced) to ``to`` beside it."""

    path: str
    to: str
    expect_sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class Symlink(Op, kind="symlink"):
    path: str
    target: str


@dataclasses.dataclass(frozen=True)
class RemoveSymlink(Op, kind="remove_symlink"):
    path: str
    target: str


@dataclasses.dataclass(frozen=True)
class InstallTemplate(Op, kind="install_template"):
    """Make ``~/.reconciler/templates/DIGEST`` hold exactly ``entries`` (relative path ->
    {"content", "mode"} or {"link"}), once ``library`` is installed."""

    digest: str
    entries: dict[str, dict[str, Any]]
    library: str


@dataclasses.dataclass(frozen=True)
class SetTemplateDir(Op, kind="set_template_dir"):
    """Point ``init.templateDir`` in ``~/.gitconfig`` at ``value`` while it names
    ``expect`` (None: unset)."""

    value: str
    expect: str | None = None


@dataclasses.dataclass(frozen=True)
class SshConfigBlock(Op, kind="ssh_config_block"):
    """Put ``block`` (its lines, markers included; empty: none) in place of the managed
    block of ``path``, or first in the file when it has none."""

    path: str = ".ssh/config"
    block: tuple[str, ...] = ()
    mode: int = 0o600
    dir_mode: int = 0o700


@dataclasses.dataclass(frozen=True)
class SetConfig(Op, kind="set_config"):
    """Make the repository's ``key`` exactly ``values`` (none: unset), in its own config."""

    repo: str
    key: str
    values: tuple[str, ...] = ()


# --- refs (reconciler.server.refs) -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PushRefs(Op, kind="push_refs"):
    """Push to the remote ``peer``: (ref, new, expected old) each, compare-and-swap;
    an empty new deletes, an empty expected old requires the ref to be absent."""

    repo: str
    peer: str
    updates: tuple[tuple[str, str, str], ...]
    timeout: float = 600.0


@dataclasses.dataclass(frozen=True)
class RemoveStaleLock(Op, kind="remove_stale_lock"):
    repo: str
    ref: str
    min_age: float


@dataclasses.dataclass(frozen=True)
class AdoptMajority(Op, kind="adopt_majority"):
    repo: str
    ref: str
    new: str
    old: str
    peer: str
    timeout: float = 600.0


# --- replication queue (reconciler.server.queue) ---------------------------------------


@dataclasses.dataclass(frozen=True)
class DrainQueue(Op, kind="drain_queue"):
    base: str
    files: tuple[str, ...]
    queue: str


# --- server library and bootstrap (reconciler.server.library) --------------------------


@dataclasses.dataclass(frozen=True)
class InstallLibrary(Op, kind="install_library"):
    """The library's files (path -> base64) as ``lib-VERSION``; with ``runtime`` the
    gitosis runtime's commands too."""

    version: str
    files: dict[str, str]
    runtime: bool = False


@dataclasses.dataclass(frozen=True)
class CreateGitUser(Op, kind="create_git_user"):
    """Run as root: the git user the server's gitosis serves as."""

    user: str
