"""Saved plans: ``reconcile plan -out FILE``, then ``reconcile apply FILE``.

The file holds the complete plan (every action with its ops), the options it was
made with (``--server``, ``--replace-foreign``, ``--prune``, the plan's time
stamp), the identity of the desired state (the admin checkout's path, branch and
HEAD, a digest of each file under cluster.d/ and keydir/, and of what the planner
read from the checkout) and a fingerprint of every server's facts: a digest over
the canonical JSON of what the planner read from that server, with one short
digest per part (known_hosts, the admin repository, each repository's refs, hook,
remotes, ...) so that a refusal can say what changed.

Values the gather program reports that the planner does not read (its own
duration, the hook's push statistics, which the gather itself folds) are left out:
they change at every gather. Secrets are never in a plan: ops carry public keys
only (the server keys are generated on the servers).

The file is JSON with a ``format_version``, written atomically with mode 0600.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from reconciler import subjects
from reconciler.errors import ReconcilerError
from reconciler.facts import Facts, ServerFacts
from reconciler.planning.model import Plan

SAVED_PLAN_FORMAT_VERSION = 1
KIND = "reconcile saved plan"
SHORT = 16  # hex digits of a part's digest: enough to tell which part changed

# ServerFacts fields the planner never reads; they change at every gather.
NOT_PLANNED = frozenset({"server", "seconds", "fact_cache_hits", "pushes"})

# The parts of a server's facts a refusal names, and the fields each covers; then
# those of the subjects that declare their facts (reconciler.subjects).
SERVER_PARTS: dict[str, tuple[str, ...]] = {
    "account": ("home", "uid", "user", "repositories_dir", "repositories_exists"),
    "server key": ("server_key", "server_key_private", "key_pairs", "ssh_dir_mode"),
    "known_hosts": ("known_hosts",),
    "ssh config": ("ssh_config",),
    "authorized_keys": ("authorized_keys",),
    "host key": ("host_key",),
    "replication settings": ("settings", "settings_text"),
    "replication queue": ("queue", "queue_errors"),
    "admin repository": ("admin",),
    "gitosis": ("gitosis",),
    "server library": ("library",),
    "git version": ("git_version",),
    "git template": ("git_template",),
    "gitweb projects.list": ("projects_list",),
    "repository descriptions": ("repo_sections",),
}
REPOSITORY_PARTS: dict[str, tuple[str, ...]] = {
    "refs": ("head", "refs_digest", "ref_count", "refs", "aborted"),
    "hook": ("hook", "proc_receive_hook", "transaction_hook", "proc_receive_refs"),
    "remotes": ("remotes",),
    # Which refs are locked, not for how long: the age moves at every gather, and the
    # removal checks it again when it runs.
    "ref locks": ("ref_locks",),
    "bare, git-daemon-export-ok": ("bare", "export_ok"),
}


def plain(value: Any) -> Any:
    """A fact value as JSON data: dataclasses as objects, tuples as lists."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class ServerFingerprint:
    """What the planner read from one server, as digests."""

    digest: str
    state: str  # "read", "unreachable", or "no git user USER"
    parts: dict[str, str]  # part -> short digest
    repositories: dict[str, tuple[str, ...]]  # repository -> short digest per part

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "state": self.state,
            "parts": self.parts,
            "repositories": {name: list(d) for name, d in self.repositories.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerFingerprint:
        return cls(
            digest=str(data["digest"]),
            state=str(data["state"]),
            parts={str(k): str(v) for k, v in data["parts"].items()},
            repositories={
                str(name): tuple(str(d) for d in value)
                for name, value in data["repositories"].items()
            },
        )


def fingerprint_server(name: str, facts: Facts) -> ServerFingerprint:
    if name in facts.servers:
        return _fingerprint_read(facts.servers[name])
    if name in facts.missing_git_users:
        state = f"no git user {facts.missing_git_users[name]}"
        parts = {"host key": digest(facts.missing_host_keys.get(name))[:SHORT]}
    else:
        # Only that it could not be read: the wording of a connection error may vary.
        state, parts = "unreachable", {}
    return ServerFingerprint(digest({"state": state, "parts": parts}), state, parts, {})


def _repository_value(facts: Any, name: str) -> Any:
    if name == "ref_locks":
        return sorted(ref for ref, _age in facts.ref_locks)
    return plain(getattr(facts, name))


def _fingerprint_read(server: ServerFacts) -> ServerFingerprint:
    full: dict[str, Any] = {}
    parts = {}
    for part, names in SERVER_PARTS.items():
        full[part] = digest({n: plain(getattr(server, n)) for n in names})
        parts[part] = full[part][:SHORT]
    registered: dict[str, dict[str, Any]] = {}
    for fact in subjects.facts():
        registered.setdefault(fact.part, {})[fact.key] = plain(server.fact(fact))
    for part, values in registered.items():
        full[part] = digest(values)
        parts[part] = full[part][:SHORT]
    repositories = {}
    for repository, facts in sorted(server.repositories.items()):
        each = [
            digest({n: _repository_value(facts, n) for n in names})
            for names in REPOSITORY_PARTS.values()
        ]
        full[f"repository {repository}"] = each
        repositories[repository] = tuple(d[:SHORT] for d in each)
    return ServerFingerprint(digest(full), "read", parts, repositories)


def fingerprint_facts(facts: Facts, names: Iterable[str]) -> dict[str, ServerFingerprint]:
    return {name: fingerprint_server(name, facts) for name in names}


MAX_NAMED = 8


def _named(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_NAMED])
    return shown + (f", … ({len(items) - MAX_NAMED} more)" if len(items) > MAX_NAMED else "")


def server_changes(then: ServerFingerprint, now: ServerFingerprint) -> str | None:
    """What changed on a server, as one phrase; None when nothing did."""
    if then.digest == now.digest:
        return None
    if then.state != now.state:
        return f"it was {_state(then.state)} when the plan was made, and is {_state(now.state)} now"
    changed = [part for part in then.parts if then.parts[part] != now.parts.get(part)]
    repositories = []
    labels = list(REPOSITORY_PARTS)
    for name in sorted(set(then.repositories) | set(now.repositories)):
        before, after = then.repositories.get(name), now.repositories.get(name)
        if before == after:
            continue
        if before is None:
            repositories.append(f"{name} (appeared)")
        elif after is None:
            repositories.append(f"{name} (gone)")
        else:
            which = [label for label, b, a in zip(labels, before, after, strict=True) if b != a]
            repositories.append(f"{name} ({', '.join(which)})")
    said = []
    if repositories:
        said.append(f"repositories {_named(repositories)}")
    said += changed
    return "; ".join(said) or "its facts"


def _state(state: str) -> str:
    return "read" if state == "read" else state


@dataclass(frozen=True)
class DesiredIdentity:
    """Which desired state a plan was made from."""

    root: str  # the admin checkout, absolute
    branch: str
    head: str | None
    files: dict[str, str]  # every file under cluster.d/ and keydir/ -> short digest
    checkout: str  # digest of what the planner read from the checkout (CheckoutFacts)

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "branch": self.branch,
            "head": self.head,
            "files": self.files,
            "checkout": self.checkout,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DesiredIdentity:
        head = data["head"]
        return cls(
            root=str(data["root"]),
            branch=str(data["branch"]),
            head=None if head is None else str(head),
            files={str(k): str(v) for k, v in data["files"].items()},
            checkout=str(data["checkout"]),
        )


DESIRED_DIRECTORIES = ("cluster.d", "keydir")


def desired_files(root: Path) -> dict[str, str]:
    found = {}
    for directory in DESIRED_DIRECTORIES:
        base = root / directory
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if path.is_file() or path.is_symlink():
                data = path.read_bytes() if path.is_file() else b"symlink:" + bytes(path.readlink())
                found[str(path.relative_to(root))] = hashlib.sha256(data).hexdigest()[:SHORT]
    return found


def desired_identity(root: Path, checkout: Any) -> DesiredIdentity:
    """``checkout`` is the pipeline's ``CheckoutFacts``."""
    return DesiredIdentity(
        root=str(root.resolve()),
        branch=str(checkout.branch),
        head=checkout.head,
        files=desired_files(root),
        checkout=digest({k: v for k, v in plain(checkout).items() if k != "root"}),
    )


def desired_changes(then: DesiredIdentity, now: DesiredIdentity) -> str | None:
    """What changed in the desired state, as one sentence; None when nothing did."""
    if then.root != now.root:
        return (
            f"the plan was made in the admin checkout {then.root}, not {now.root}; "
            f"apply it with -C {then.root}, or run plan again here"
        )
    if then.files != now.files:
        names = sorted(
            n for n in set(then.files) | set(now.files) if then.files.get(n) != now.files.get(n)
        )
        return (
            f"cluster.d/ or keydir/ in {now.root} changed since the plan was made "
            f"({_named(names)}); run plan again"
        )
    if then.head != now.head or then.branch != now.branch:
        return (
            f"the admin checkout {now.root} moved since the plan was made (from "
            f"{then.branch} at {(then.head or 'no commit')[:12]} to {now.branch} at "
            f"{(now.head or 'no commit')[:12]}); run plan again"
        )
    if then.checkout != now.checkout:
        return (
            f"the admin checkout {now.root} changed since the plan was made (what it renders, "
            "or how the servers' admin repositories relate to it); run plan again"
        )
    return None


@dataclass(frozen=True)
class SavedOptions:
    """The plan options that shape the plan, as recorded (the hook by the version of
    the server library it runs)."""

    servers: tuple[str, ...]
    replace_foreign: bool
    prune: bool
    stamp: str
    library: str

    def to_json(self) -> dict[str, Any]:
        return {
            "servers": list(self.servers),
            "replace_foreign": self.replace_foreign,
            "prune": self.prune,
            "stamp": self.stamp,
            "library": self.library,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SavedOptions:
        return cls(
            servers=tuple(str(s) for s in data["servers"]),
            replace_foreign=_bool(data["replace_foreign"]),
            prune=_bool(data["prune"]),
            stamp=str(data["stamp"]),
            library=str(data["library"]),
        )


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


@dataclass(frozen=True)
class SavedPlan:
    plan: Plan
    options: SavedOptions
    desired: DesiredIdentity
    servers: dict[str, ServerFingerprint]
    version: str  # the reconciler that made it
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": SAVED_PLAN_FORMAT_VERSION,
            "kind": KIND,
            "reconciler_version": self.version,
            "created": self.created,
            "options": self.options.to_json(),
            "desired": self.desired.to_json(),
            "servers": {name: f.to_json() for name, f in self.servers.items()},
            "plan": self.plan.to_json(with_ops=True),
        }


def write_saved_plan(path: Path, saved: SavedPlan) -> int:
    """Write atomically with mode 0600 (a temporary file beside it, fsynced, renamed);
    returns the file's size."""
    from reconciler.desired.files import write_if_changed

    if path.is_dir():
        raise ReconcilerError(f"{path} is a directory; give plan -out a file name")
    data = {**saved.to_json(), "created": saved.created or _now()}
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n"
    try:
        write_if_changed(path, text, mode=0o600)
    except OSError as exc:
        raise ReconcilerError(f"cannot write the plan to {path}: {exc.strerror or exc}") from exc
    return len(text.encode("utf-8"))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_saved_plan(path: Path) -> SavedPlan:
    """Read a plan file; anything else is refused with one sentence."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ReconcilerError(f"cannot read the plan file {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReconcilerError(
            f"{path} is not a plan file of reconcile plan -out (not JSON: {exc}); "
            "make the plan again"
        ) from exc
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ReconcilerError(
            f"{path} is not a plan file of reconcile plan -out; make the plan again"
        )
    version = data.get("format_version")
    if version != SAVED_PLAN_FORMAT_VERSION:
        raise ReconcilerError(
            f"{path} is a plan file of format version {version!r}, and this reconcile reads "
            f"only version {SAVED_PLAN_FORMAT_VERSION}; make the plan again with this reconcile"
        )
    try:
        return SavedPlan(
            plan=Plan.from_json(data["plan"]),
            options=SavedOptions.from_json(data["options"]),
            desired=DesiredIdentity.from_json(data["desired"]),
            servers={
                str(name): ServerFingerprint.from_json(value)
                for name, value in data["servers"].items()
            },
            version=str(data["reconciler_version"]),
            created=str(data.get("created", "")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReconcilerError(
            f"{path} is a damaged plan file ({type(exc).__name__}: {exc}); make the plan again"
        ) from exc


def check_unchanged(
    saved: SavedPlan,
    desired: DesiredIdentity,
    servers: dict[str, ServerFingerprint],
    *,
    path: Path,
) -> None:
    """Refuse, with one sentence, when the desired state or a server changed since the
    plan was made."""
    why = desired_changes(saved.desired, desired)
    if why is not None:
        raise ReconcilerError(f"{path}: {why}; nothing was changed on any server")
    changed = []
    for name in sorted(set(saved.servers) | set(servers)):
        then, now = saved.servers.get(name), servers.get(name)
        if then is None or now is None:
            changed.append(f"server {name} {'is new' if then is None else 'is gone'}")
            continue
        what = server_changes(then, now)
        if what is not None:
            changed.append(f"server {name} changed since the plan was made: {what}")
    if changed:
        raise ReconcilerError(
            f"{path}: {'; '.join(changed)}; run plan again (nothing was changed on any server)"
        )


def plan_differences(saved: Plan, now: Plan, key: Callable[[Any], str]) -> list[str]:
    """Actions in one plan and not the other, by description."""
    then_keys = {key(a): a for a in saved.actions}
    now_keys = {key(a): a for a in now.actions}
    gone = [f"{a.server}: {a.description}" for k, a in then_keys.items() if k not in now_keys]
    new = [f"{a.server}: {a.description}" for k, a in now_keys.items() if k not in then_keys]
    return [f"not any more: {d}" for d in gone] + [f"new: {d}" for d in new]
