#!/usr/bin/env python3
"""Replicate the ref updates of a push to the cluster's other servers.

``hooks/post-receive`` of every mirrored repository is a short stub
(``reconciler.server.hooks``) that runs this module from the server library
``reconcile apply`` installs once per server (``reconciler.server.library``). It
runs on the servers with nothing but git and Python 3.9 or newer, so it imports
nothing beyond the standard library.

Settings are per server, not per repository (``reconciler.server.settings``). The
hook walks up from the repository (``$GIT_DIR``) to the first directory holding
``.reconciler/replication.json``; that directory is the repositories base, and
the repository's name is its path below the base with one ``.git`` removed.

For each peer the hook pushes to the git remote named after the peer, all the
push's ref updates in one ``git push --porcelain`` (``lease_push``: from a
throw-away repository with one pattern refspec, since git's handling of many
explicit refspecs and leases is quadratic), compare-and-swap on each ref's old
value (a lease for an existing ref, no force for a creation, the refspec
``:<ref>`` for a deletion): a peer that moved elsewhere rejects the update
instead of losing commits. Peers are pushed in parallel, each in its own
process group, killed as a whole after ``timeout`` seconds.

A push that came from a peer is not forwarded again: ``GITOSIS_USER`` is one of
``mirror_users`` (a push over ssh through gitosis), or ``RECONCILER_REPLICA`` is
set (the hook sets it for its own pushes; a local receiving hook inherits it).

A lease that fails (or the peer's own compare-and-swap, when another server's
push moved the ref meanwhile) is looked at once more (``git ls-remote``): a
deletion the peer already made is done; a peer that is only behind (its value is
an ancestor of the new one here, so it missed an earlier update) is
fast-forwarded with the lease on the value it has; anything else is a
divergence, never forced.

Every update a peer did not take goes to the durable queue
``<base>/.reconciler/queue/``, one JSON file per (peer, ref update); the format
is described in ``reconciler/replication/queue.py``. The entry is written as
``pending`` before the push starts, so a hook killed halfway still leaves it
queued; it is deleted when the peer takes the update, or rewritten with the
reason it did not. When a later value of a ref reaches a peer, older transient
entries of that ref for that peer are moot and dropped (only while nobody holds
the drain lock). ``mode: async`` queues every update as ``pending`` and leaves
the pushing to a detached drainer (``post-receive --drain BASE [--repository
NAME]``), which works only on ``pending`` entries; the rest wait for
``reconcile apply`` (which may run ``--drain BASE --retry`` to try every entry).

The admin repository (``admin_repository`` in the settings) is not replicated:
only ``reconcile apply`` sends it to the servers, and the servers' keys have no
access to it; the pusher is told that it reaches the others at the next apply.

The pusher sees one line per peer. The hook always exits 0: post-receive cannot
fail a push that has already happened, and a broken hook must not hide it.

With ``"run_kept_hooks": true`` in the settings, a push made to this server (not
one replicated from a peer) then runs the foreign post-receive that ``reconcile
apply --replace-foreign`` kept beside this hook (``hooks/post-receive.foreign-TIME``,
the newest, if executable) with the same stdin and environment, bounded by
``timeout``; its output goes to the pusher and its failure is only reported. Its
pushes to the peers' remotes are turned away (their push URL is overridden for
it): replicating is this hook's job, and a kept ``git push --mirror`` loop would
delete refs a peer took from someone else meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from reconciler.server import lease_push
from reconciler.server import proc_receive as proc_receive_mod
from reconciler.server.common import (
    FORMAT_VERSION,
    KEPT_HOOK_PREFIX,
    OBJECT_ID,
    PROC_RECEIVE_REFS,
    QUEUE_PATH,
    SETTINGS_PATH,
    InThread,
    bounded,
    drain_lock,
    is_ancestor,
    is_repository,
    parallel_map,
    without_repository_env,
)
from reconciler.server.proc_receive import emit_err as _emit_err
from reconciler.server.pushes import record_push
from reconciler.server.queue import (
    TRANSIENT_REASONS,
    QueueEntry,
    RefUpdate,
    is_zero,
    new_entry_name,
    read_entries,
    update_entries,
    write_entries,
)
from reconciler.server.settings import Settings, SettingsError, find_base, load_settings

# In quorum mode each mirrored repository's hooks/proc-receive is a link to its
# post-receive stub, which runs this library's bin/proc-receive
# (``proc_receive.main``): it decides, while git holds the refs' locks, whether a
# majority of the declared servers takes the update (docs/quorum.md).
QUORUM_PREFIXES = PROC_RECEIVE_REFS  # the replicated refs
ABORTED_NAMESPACE = "refs/reconciler/aborted/"
# A push of many refs reports this many "taken by" lines and sums up the rest.
SUMMARY_LINES = 20

# The detached drainer stops starting pushes after this long; what is left stays
# queued for `reconcile apply`.
DRAIN_SECONDS = 600.0
DRAIN_ROUNDS = 100
DRAIN_WORKERS = 8
# Deletions per `git push` command: keeps the command line far below ARG_MAX (every
# other update of a push goes in its one command, see lease_push).
PUSH_CHUNK = lease_push.DELETE_CHUNK
# The second look asks the peer for these refs by name; for more, for all its refs.
LS_REMOTE_PATTERNS_MAX = 64
# A rejection git reports for a lease that no longer holds, or a history that moved.
DIVERGED_WHY = ("stale info", "fetch first", "non-fast-forward", "already exists")
# The peer's own compare-and-swap failing: another push moved the ref between its
# advertisement and our update (two servers replicating the same ref at once).
MOVED_MEANWHILE_WHY = ("failed to update ref", "cannot lock ref", "failed to lock")
# gitosis reports a refusal on stderr as LEVEL:LOGGER:MESSAGE before it exits,
# e.g. "ERROR:gitosis.serve.main:Repository read access denied".
_GITOSIS_ERROR = re.compile(r"^(?:remote: )?ERROR:gitosis\.[A-Za-z0-9_.]+:\s*(.+)$", re.MULTILINE)
# The library this module was loaded from: the drainer runs the same version.
_LIBRARY = str(Path(os.path.abspath(__file__)).parents[2])
DRAINER = (
    "import sys;sys.path.insert(0,sys.argv.pop(1));"
    "from reconciler.server.replication import main;sys.exit(main())"
)


def repository_name(base: Path, git_dir: Path) -> str:
    name = git_dir.relative_to(base).as_posix()
    return name[: -len(".git")] if name.endswith(".git") else name


def repository_dir(base: Path, name: str) -> Path | None:
    for candidate in (base / (name + ".git"), base / name):
        if is_repository(str(candidate)):
            return candidate
    return None


# --- ref updates --------------------------------------------------------------


# --- ref updates --------------------------------------------------------------


def parse_updates(text: str) -> list[RefUpdate]:
    """The ``old new ref`` lines git gives post-receive on stdin."""
    updates = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split()
        if (
            len(parts) != 3
            or not OBJECT_ID.fullmatch(parts[0])
            or not OBJECT_ID.fullmatch(parts[1])
            or not parts[2].startswith("refs/")
        ):
            raise ValueError(f"unexpected update line {line!r}")
        updates.append(RefUpdate(old=parts[0], new=parts[1], ref=parts[2]))
    return updates


# --- the queue ------------------------------------------------------------------


# --- the queue ------------------------------------------------------------------


def make_entry(
    settings: Settings, repository: str, peer: str, update: RefUpdate, reason: str, detail: str
) -> QueueEntry:
    return QueueEntry(
        repository=repository,
        ref=update.ref,
        old=update.old,
        new=update.new,
        peer=peer,
        reason=reason,
        transient=reason in TRANSIENT_REASONS,
        time=time.time(),
        server=settings.server,
        detail=detail,
    )


# --- push records -------------------------------------------------------------------


def push_result(outcomes: Sequence[RefOutcome]) -> str:
    """ "ok" when the peer took every update, otherwise the first reason it did not."""
    return next((o.reason for o in outcomes if not o.ok), "ok")


# --- running git, bounded ----------------------------------------------------------


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool


def run_bounded(argv: Sequence[str], cwd: Path, env: Mapping[str, str], timeout: float) -> Run:
    """Run ``argv`` in its own process group; kill the whole group (the ssh that git
    started included, or it keeps the peer's connection and our pipes open) after
    ``timeout``."""
    done = bounded(argv, cwd=cwd, env=env, timeout=timeout, gentle=False)
    return Run(
        returncode=done.returncode,
        stdout=done.stdout.decode("utf-8", "replace"),
        stderr=done.stderr.decode("utf-8", "replace"),
        timed_out=done.timed_out,
    )


def push_environment(environ: Mapping[str, str], settings: Settings) -> dict[str, str]:
    env = without_repository_env(environ)
    env = {k: v for k, v in env.items() if not k.startswith("GIT_PUSH_OPTION")}
    # A local peer's hook inherits this and does not forward the push again.
    env["RECONCILER_REPLICA"] = settings.server
    if "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env:
        # Never wait for a passphrase or a host-key question; the hook's own
        # timeout kills a slower connection first and reports it as a timeout.
        connect = math.ceil(settings.timeout) + 1
        env["GIT_SSH_COMMAND"] = f"ssh -o BatchMode=yes -o ConnectTimeout={connect}"
    return env


def remote_config(
    git_dir: Path, env: Mapping[str, str], timeout: float
) -> tuple[dict[str, list[tuple[str, str]]], bool]:
    """Per remote, the settings a push uses (URLs first); whether core.sshCommand is set."""
    run = run_bounded(list(lease_push.REMOTE_CONFIG_ARGV), git_dir, env, timeout)
    return lease_push.parse_remote_config(run.stdout)


def remote_names(git_dir: Path, env: Mapping[str, str], timeout: float) -> tuple[set[str], bool]:
    """The remotes that have a URL, and whether core.sshCommand is configured."""
    remotes, ssh_command = remote_config(git_dir, env, timeout)
    names = {name for name, items in remotes.items() if any(k == "url" for k, _ in items)}
    return names, ssh_command


Remotes = dict[str, list[tuple[str, str]]]


@dataclass(frozen=True)
class Reach:
    """How this server's pushes reach its peers (``peer_environment``)."""

    env: dict[str, str]
    remotes: Remotes


def peer_environment(
    git_dir: Path, environ: Mapping[str, str], settings: Settings, repository: str
) -> tuple[dict[str, str], Remotes]:
    """The environment pushes from ``git_dir`` to its peers run in, and per peer it can
    name (a remote with a URL, or a URL from the settings: ``reach_peers_without_remote``)
    the remote's settings a push uses (``lease_push`` copies them)."""
    env = push_environment(environ, settings)
    env["GIT_DIR"] = str(git_dir)
    config, ssh_command = remote_config(git_dir, env, settings.timeout)
    if ssh_command and "GIT_SSH_COMMAND" not in environ:
        # The repository chose its own ssh command; ours would override it.
        env.pop("GIT_SSH_COMMAND", None)
    remotes = {name: items for name, items in config.items() if any(k == "url" for k, _ in items)}
    found = reach_peers_without_remote(env, settings, repository, set(remotes))
    for peer, url in found.items():
        remotes[peer] = [("url", url)]
    return env, remotes


def reach_peers_without_remote(
    env: dict[str, str], settings: Settings, repository: str, remotes: set[str]
) -> dict[str, str]:
    """The peers this repository has no remote for, made reachable by name anyway; per
    peer, its URL.

    A repository gitosis created on its first access (a push to a newly declared
    repository before an apply reached this server) has no remotes until the next
    apply. Each such peer's URL comes from the settings (``peer_urls``, the same URLs
    apply gives the remotes) and is handed to every git command the hook runs as
    ``-c remote.PEER.url=URL`` through ``GIT_CONFIG_PARAMETERS`` (added to ``env``),
    so pushes, ls-remote and fetch name the peer as usual. Not sent over ssh, and
    git's local transport clears it for the receiving side.
    """
    found = {}
    for peer in settings.peers:
        url = settings.peer_url(peer, repository) if peer not in remotes else None
        if url is not None:
            found[peer] = url
    if found:
        entries = [f"remote.{peer}.url={url}" for peer, url in found.items()]
        quoted = " ".join("'" + e.replace("'", "'\\''") + "'" for e in entries)
        existing = env.get("GIT_CONFIG_PARAMETERS", "")
        env["GIT_CONFIG_PARAMETERS"] = f"{existing} {quoted}".strip()
    return found


# --- pushing to one peer ----------------------------------------------------------------


@dataclass(frozen=True)
class RefOutcome:
    update: RefUpdate
    reason: str = ""  # empty: the peer has the update
    detail: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason


def parse_porcelain(stdout: str) -> dict[str, tuple[str, str]]:
    """Per destination ref: git's flag and summary, from ``git push --porcelain``."""
    statuses = {}
    for line in stdout.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or len(parts[0]) != 1:
            continue
        destination = parts[1].rpartition(":")[2]
        statuses[destination] = (parts[0], parts[2])
    return statuses


def _why(summary: str) -> str:
    match = re.search(r"\(([^()]*)\)\s*$", summary)
    return match.group(1) if match else summary.strip()


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("To ", "Done")):
            return line[:300]
    return ""


def gitosis_refusal(stderr: str) -> str | None:
    """The sentence a peer's gitosis refused the connection with, if it did."""
    match = _GITOSIS_ERROR.search(stderr)
    return match.group(1).strip()[:300] if match else None


def classify(update: RefUpdate, status: tuple[str, str] | None, run: Run) -> RefOutcome:
    if status is None:
        if run.timed_out:
            return RefOutcome(update, "timeout")
        refusal = gitosis_refusal(run.stderr)
        if refusal is not None:
            # The peer answered: its gitosis does not let this server's key in. Not
            # "unreachable" (nothing is wrong with the network), and not transient.
            return RefOutcome(update, "denied", refusal)
        if run.stdout.strip() or run.returncode == 0:
            return RefOutcome(update, "unreachable", "git reported no status for the ref")
        if "does not appear to be a git repository" in run.stderr:
            return RefOutcome(update, "missing repository", _first_line(run.stderr))
        if "timed out" in run.stderr:
            return RefOutcome(update, "timeout", _first_line(run.stderr))
        return RefOutcome(update, "unreachable", _first_line(run.stderr))
    flag, summary = status
    if flag in "=+*- ":
        return RefOutcome(update)
    why = _why(summary)
    # "needs force": a creation sent without force (lease_push) meeting another
    # value that is not a commit; a lease requiring absence would have been stale.
    if summary.startswith("[rejected]") and (why in DIVERGED_WHY or why == "needs force"):
        return RefOutcome(update, "diverged", why)
    if summary.startswith("[remote rejected]") and why.startswith(MOVED_MEANWHILE_WHY):
        return RefOutcome(update, "diverged", why)
    return RefOutcome(update, "rejected", why)


def push_to_peer(
    git_dir: Path,
    peer: str,
    updates: Sequence[RefUpdate],
    env: Mapping[str, str],
    timeout: float,
    remote: Sequence[tuple[str, str]],
) -> list[RefOutcome]:
    """Push ``updates`` to ``peer`` (its remote's settings ``remote``) with
    compare-and-swap on each ref's old value.

    All within ``timeout``, in one ``git push`` (see lease_push); only a push of very
    many deletions goes in several, so that no command line outgrows the system's limit.
    """
    deadline = time.monotonic() + timeout
    outcomes: list[RefOutcome] = []
    for chunk in lease_push.chunks(updates):
        left = deadline - time.monotonic()
        failed = [o for o in outcomes if o.reason in ("unreachable", "timeout", "denied")]
        if failed or left <= 0:
            # The peer is not answering: the rest would only wait the same way.
            reason = failed[0].reason if failed else "timeout"
            outcomes += [RefOutcome(u, reason, "not tried") for u in chunk]
        else:
            outcomes += _push_with_second_look(git_dir, peer, chunk, env, left, remote)
    by_ref = {o.update.ref: o for o in outcomes}
    return [by_ref[u.ref] for u in updates]


def _push_with_second_look(
    git_dir: Path,
    peer: str,
    updates: Sequence[RefUpdate],
    env: Mapping[str, str],
    timeout: float,
    remote: Sequence[tuple[str, str]],
) -> list[RefOutcome]:
    """Push; then look once more at every lease that failed.

    A deletion the peer has already made is done, and a peer that is only behind
    (it missed an earlier update, and its value is an ancestor of the new one
    here) is fast-forwarded with the lease on the value it has. Anything else is
    a divergence and is left alone. One ``ls-remote`` for all of them, and one
    ancestry check per distinct pair of values.
    """
    deadline = time.monotonic() + timeout
    outcomes = _push(git_dir, updates, env, timeout, remote)
    stale = [o.update for o in outcomes if o.reason == "diverged"]
    if not stale:
        return outcomes
    values = _peer_values(git_dir, peer, [u.ref for u in stale], env, deadline - time.monotonic())
    if values is None:
        return outcomes
    settled: dict[str, RefOutcome] = {}
    retry: list[RefUpdate] = []
    ancestry: dict[tuple[str, str], bool] = {}
    for update in stale:
        value = values.get(update.ref)
        if value is None and is_zero(update.new):
            settled[update.ref] = RefOutcome(update, "", "already absent")
        elif value == update.new:
            settled[update.ref] = RefOutcome(update, "", "already there")
        elif value is not None and not is_zero(update.new):
            pair = (value, update.new)
            if pair not in ancestry:
                left = deadline - time.monotonic()
                ancestry[pair] = is_ancestor(git_dir, value, update.new, env, left)
            if ancestry[pair]:
                retry.append(RefUpdate(old=value, new=update.new, ref=update.ref))
            else:
                settled[update.ref] = RefOutcome(update, "diverged", f"{peer} has {value}")
        elif value is not None:
            settled[update.ref] = RefOutcome(update, "diverged", f"{peer} has {value}")
        else:
            settled[update.ref] = RefOutcome(update, "diverged", f"{peer} does not have the ref")
    if retry and deadline - time.monotonic() > 0:
        by_ref = {u.ref: u for u in updates}
        for outcome in _push(git_dir, retry, env, deadline - time.monotonic(), remote):
            settled[outcome.update.ref] = replace(outcome, update=by_ref[outcome.update.ref])
    return [settled.get(o.update.ref, o) for o in outcomes]


def _push(
    git_dir: Path,
    updates: Sequence[RefUpdate],
    env: Mapping[str, str],
    timeout: float,
    remote: Sequence[tuple[str, str]],
) -> list[RefOutcome]:
    with lease_push.workspace(git_dir, remote, updates) as directory:
        argv = lease_push.push_argv(updates)
        run = run_bounded(argv, directory, lease_push.workspace_env(env, directory), timeout)
    statuses = parse_porcelain(run.stdout)
    return [classify(u, statuses.get(u.ref), run) for u in updates]


def _peer_values(
    git_dir: Path, peer: str, refs: Sequence[str], env: Mapping[str, str], timeout: float
) -> dict[str, str] | None:
    """The peer's current value of each of ``refs`` it has; None if it cannot be asked."""
    if timeout <= 0:
        return None
    patterns = list(refs) if len(refs) <= LS_REMOTE_PATTERNS_MAX else []
    run = run_bounded(["git", "ls-remote", "--", peer, *patterns], git_dir, env, timeout)
    if run.timed_out or run.returncode != 0:
        return None
    wanted = set(refs)
    values = {}
    for line in run.stdout.splitlines():
        value, _, ref = line.partition("\t")
        if ref in wanted:
            values[ref] = value
    return values


def _rejection(outcome: RefOutcome) -> str:
    return "diverged" if outcome.reason == "diverged" else outcome.detail or "rejected"


def peer_line(peer: str, outcomes: Sequence[RefOutcome], timeout: float) -> str:
    failed = [o for o in outcomes if not o.ok]
    if not failed:
        return f"replicated to {peer}"
    reasons = {o.reason for o in failed}
    denied = [o for o in failed if o.reason == "denied"]
    if denied:
        return (
            f"{peer} refused access: gitosis on {peer} said {denied[0].detail!r}: queued for review"
        )
    rejected = [o for o in failed if o.reason in ("diverged", "rejected")]
    if rejected:
        shown = [
            f"{o.update.ref} ({'diverged' if o.reason == 'diverged' else o.detail})"
            for o in rejected[:3]
        ]
        more = f" and {len(rejected) - 3} more" if len(rejected) > 3 else ""
        return f"{peer} rejected {', '.join(shown)}{more}: queued for review"
    if "missing repository" in reasons:
        return f"{peer} does not have the repository: queued for review"
    if "no remote" in reasons:
        return f"{peer} has no remote configured: queued"
    if "timeout" in reasons:
        return f"{peer} timed out after {timeout:g}s: queued"
    return f"{peer} unreachable: queued"


# --- the hook ------------------------------------------------------------------------


Emit = Callable[[str], None]


def _emit(line: str) -> None:
    # A pusher that went away must not stop the queueing that follows.
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def run_hook(stdin_text: str, environ: Mapping[str, str], emit: Emit = _emit) -> int:
    try:
        updates = parse_updates(stdin_text)
    except ValueError as exc:
        emit(f"replication hook error: {exc}")
        return 0
    if not updates or environ.get("RECONCILER_REPLICA"):
        return 0
    git_dir = Path(os.path.abspath(environ.get("GIT_DIR", ".")))
    base = find_base(git_dir)
    if base is None:
        emit(f"replication is not configured: no {SETTINGS_PATH} above {git_dir}")
        return 0
    try:
        settings = load_settings(base)
    except SettingsError as exc:
        emit(f"replication hook error: {exc}")
        return 0
    if environ.get("GITOSIS_USER", "") in settings.mirror_users:
        return 0
    name = repository_name(base, git_dir)
    if name == settings.admin_repository:
        emit(f"{name} reaches the other servers at the next reconcile apply")
        return 0
    reported: set[str] = set()
    try:
        if settings.mode == "quorum" and proc_receive_mod.configured(git_dir):
            pass  # proc-receive had a majority take it before the refs moved
        elif settings.mode == "quorum":
            # The quorum hook is not installed here yet (apply adds it): replicate
            # after the write, as sync mode does, rather than not at all.
            emit("quorum hook not installed in this repository yet: replicating after the write")
            _replicate_now(base, git_dir, settings, name, updates, environ, emit, reported)
        elif settings.mode == "async":
            _queue_all(base, settings, name, updates, environ, emit, reported)
        else:
            _replicate_now(base, git_dir, settings, name, updates, environ, emit, reported)
    except Exception as exc:
        emit(f"replication hook error: {exc}")
        for peer in settings.peers:
            if peer not in reported:
                _queue_quietly(base, settings, name, peer, updates, "pending", str(exc))
    if settings.run_kept_hooks:
        try:
            run_kept_hook(git_dir, stdin_text, environ, settings, emit)
        except Exception as exc:
            emit(f"kept post-receive hook: error: {exc}")
    return 0


# --- quorum mode: the decision before the ref is written -------------------------------
#
# git runs hooks/reference-transaction with the state (prepared, committed, aborted)
# as its argument and "OLD NEW REF" lines on stdin. In "prepared" the ref is locked
# here and the pushed objects are in place; a non-zero exit aborts the update. The
# update is proposed to every peer at once with compare-and-swap; it goes through
# only when a majority of the declared servers, this one included, holds the new
# value. Otherwise the peers this proposal moved are put back (compare-and-swap
# again) and the update is refused. A peer whose ref is locked by its own pending
# update, or holds another value, refuses: of two conflicting updates at most one
# can be taken by a majority. The protocol and its corner cases: docs/quorum.md.


def majority(declared: int) -> int:
    """Servers that must hold a value before a write is acknowledged."""
    return declared // 2 + 1


@dataclass(frozen=True)
class Vote:
    """A peer's answer to a proposal."""

    peer: str
    took: bool  # it holds the proposed value now
    moved: bool = False  # it holds it because of this proposal: a put-back undoes it
    reason: str = ""  # why not: unreachable, timeout, busy, other value, denied, ...
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    accept: bool
    holders: int  # servers holding the value, this one included
    needed: int
    declared: int
    put_back: tuple[str, ...] = ()  # peers to put back when refused


def decide(declared: int, votes: Sequence[Vote]) -> Decision:
    """The pure rule: accept when this server and the peers that took the value are a
    majority of the declared servers; otherwise undo what this proposal moved."""
    holders = 1 + sum(1 for vote in votes if vote.took)
    needed = majority(declared)
    if holders >= needed:
        return Decision(True, holders, needed, declared)
    moved = tuple(vote.peer for vote in votes if vote.moved)
    return Decision(False, holders, needed, declared, moved)


def _vote_reason(vote: Vote) -> str:
    if vote.reason == "busy":
        return f"{vote.peer} is taking another update of it"
    if vote.reason == "other value":
        return f"{vote.peer} holds another value"
    if vote.reason == "denied":
        return f"{vote.peer} refused access ({vote.detail})"
    return f"{vote.peer} {vote.reason}"


def refusal_line(ref: str, decision: Decision, votes: Sequence[Vote]) -> str:
    why = ", ".join(_vote_reason(v) for v in votes if not v.took)
    line = (
        f"{ref} refused: {decision.holders} of {decision.declared} servers could take it "
        f"({why}); nothing changed"
    )
    if any(v.reason in ("busy", "other value") for v in votes if not v.took):
        line += "; fetch and retry"
    if any(v.reason == "denied" for v in votes if not v.took):
        # Nearly always a repository or key that an admin change pushed by hand to
        # one server declared: the others' gitosis learns it at the next apply.
        line += "; gitosis there does not know it yet: run reconcile apply, then push again"
    return line


def _propose(
    git_dir: Path, peer: str, updates: Sequence[RefUpdate], reach: Reach, timeout: float
) -> dict[str, Vote]:
    """Push the updates to one peer with compare-and-swap on each ref's value there; a
    vote per ref, read from the peer's answer for that ref.

    One ``git push`` for any number of refs (``lease_push``, ``exact``: git's own
    explicit refspecs and leases are quadratic in the refs); only thousands of
    deletions take several (``lease_push.chunks``, the caller's)."""
    remote = reach.remotes.get(peer, [])
    with lease_push.workspace(git_dir, remote, updates, exact=True) as directory:
        argv = lease_push.push_argv(updates, exact=True)
        env = lease_push.workspace_env(reach.env, directory)
        run = run_bounded(argv, directory, env, timeout)
    statuses = parse_porcelain(run.stdout)
    votes = {}
    for update in updates:
        status = statuses.get(update.ref)
        if status is None:
            outcome = classify(update, None, run)
            votes[update.ref] = Vote(peer, False, reason=outcome.reason, detail=outcome.detail)
            continue
        flag, summary = status
        if flag == "=":
            votes[update.ref] = Vote(peer, True)
        elif flag in "+*- ":
            votes[update.ref] = Vote(peer, True, moved=True)
        else:
            why = _why(summary)
            if why.startswith(MOVED_MEANWHILE_WHY):
                reason = "busy"
            elif why in DIVERGED_WHY:
                reason = "other value"
            else:
                reason = "rejected"
            votes[update.ref] = Vote(peer, False, reason=reason, detail=why)
    return votes


def _put_back(
    git_dir: Path, peer: str, updates: Sequence[RefUpdate], reach: Reach, timeout: float
) -> list[str]:
    """Undo what a refused proposal moved on ``peer`` (compare-and-swap on the new
    value); the refs that could not be put back."""
    undo = [RefUpdate(old=u.new, new=u.old, ref=u.ref) for u in updates]
    deadline = time.monotonic() + timeout
    votes: dict[str, Vote] = {}
    for chunk in lease_push.chunks(undo):
        left = deadline - time.monotonic()
        if left <= 0:
            votes.update({u.ref: Vote(peer, False, reason="timeout") for u in chunk})
        else:
            votes.update(_propose(git_dir, peer, chunk, reach, left))
    return [ref for ref, vote in votes.items() if not vote.took]


def _is_user_write(environ: Mapping[str, str], settings: Settings) -> bool:
    """A person's push (or any other write to a replicated ref on this server), not a
    peer's proposal or put-back, nor the reconciler's own repair."""
    if environ.get("RECONCILER_REPLICA"):
        return False  # a local peer, or a write made by this program
    return environ.get("GITOSIS_USER", "") not in settings.mirror_users


def proc_receive(
    updates: Sequence[RefUpdate], environ: Mapping[str, str], atomic: bool = False
) -> dict[str, str | None]:
    """Write a push's ref updates for hooks/proc-receive (``reconciler.server.proc_receive``).

    A person's push of replicated refs in quorum mode is written only where a majority
    of the declared servers takes it; a peer's proposal or put-back, the reconciler's
    own writes and anything outside quorum mode are written with compare-and-swap
    alone. Per ref: None when it was written, else the reason the pusher sees.
    """
    results: dict[str, str | None] = {u.ref: None for u in updates}
    git_dir = Path(os.path.abspath(environ.get("GIT_DIR", ".")))
    env = {k: v for k, v in environ.items() if k != "GIT_QUARANTINE_PATH"}
    base = find_base(git_dir)
    settings: Settings | None = None
    if base is not None:
        try:
            settings = load_settings(base)
        except SettingsError as exc:
            _emit_err(f"quorum hook error: {exc}; refusing the update")
            return {u.ref: "replication settings unreadable" for u in updates}
    person = settings is None or _is_user_write(environ, settings)
    name = repository_name(base, git_dir) if base is not None else ""
    voting = (
        settings is not None
        and base is not None
        and person
        and settings.mode == "quorum"
        and name != settings.admin_repository
    )
    timeout = settings.timeout if settings is not None else 60.0
    if person:
        results.update(proc_receive_mod.receive_checks(git_dir, updates, env, timeout))
    todo = [u for u in updates if results[u.ref] is None and u.old != u.new]
    if atomic and any(results.values()):
        return {u.ref: results[u.ref] or "atomic push failed" for u in updates}
    proposed = [u for u in todo if voting and u.ref.startswith(QUORUM_PREFIXES)]
    if not proposed or settings is None or base is None:
        return proc_receive_mod.write_unvoted(git_dir, todo, env, timeout, atomic, results)
    # The proposals go out while this server takes its own locks (each costs about
    # what writing the refs costs: seconds for thousands of refs). This server counts
    # as a holder only of the refs it locked at their old value, and holds those locks
    # until it commits, so a proposal of another value that reaches it first makes its
    # own lock fail: that ref is refused here, and put back where our proposal moved
    # it, as any refused ref.
    locking = InThread(proc_receive_mod.lock, git_dir, todo, env, timeout)
    answers, decisions, reach = _vote(git_dir, settings, name, proposed, environ)
    try:
        transaction, refused = locking.result()
    except Exception as exc:  # as if nothing could be locked: put back all
        transaction, refused = None, {u.ref: f"failed to lock: {exc}" for u in todo}
    locked = {u.ref for u in transaction.updates} if transaction is not None else set()
    unlocked = [u for u in proposed if u.ref not in locked]
    if transaction is not None and atomic and refused:
        unlocked = proposed
    _undo(git_dir, settings, unlocked, answers, reach)
    results.update(refused)
    if transaction is not None and atomic and refused:
        transaction.abort()
        return {u.ref: results[u.ref] or "atomic push failed" for u in updates}
    if transaction is None:
        return results
    voted = [u for u in transaction.updates if voting and u.ref.startswith(QUORUM_PREFIXES)]
    if not voted:
        if not transaction.commit():
            results.update({u.ref: "failed to update ref" for u in transaction.updates})
        return results
    if settings is None or base is None:  # voting implies both; for mypy
        transaction.abort()
        return {u.ref: "replication settings unreadable" for u in updates}
    refusals, behind = _refusals(git_dir, settings, voted, answers, decisions, reach, atomic)
    if not refusals:
        if transaction.commit():
            _accepted(base, settings, name, voted, answers, decisions, environ)
        else:
            _undo(git_dir, settings, voted, answers, reach)
            results.update({u.ref: "failed to update ref" for u in transaction.updates})
        return results
    # One transaction is all or nothing: give back the locks and take again those of
    # the refs that may still be written. A proposal of another value that reaches
    # this server meanwhile needs a majority too, and the peers that took ours
    # refuse it; so at most our refs turn out moved, and are refused.
    transaction.abort()
    if behind:
        # Only now: the catch-up moves refs this transaction held.
        _start_catch_up(base, name, environ)
    results.update(refusals)
    keep = [u for u in transaction.updates if u.ref not in refusals]
    if not keep:
        return results
    again, lost = proc_receive_mod.lock(git_dir, keep, env, timeout)
    if again is not None and not again.commit():
        lost.update({u.ref: "failed to update ref" for u in again.updates})
    results.update(lost)
    written = [u for u in voted if u.ref in {k.ref for k in keep} and u.ref not in lost]
    _undo(git_dir, settings, [u for u in voted if u.ref in lost], answers, reach)
    _accepted(base, settings, name, written, answers, decisions, environ)
    return results


def _vote(
    git_dir: Path,
    settings: Settings,
    name: str,
    updates: Sequence[RefUpdate],
    environ: Mapping[str, str],
) -> tuple[dict[str, dict[str, Vote]], dict[str, Decision], Reach]:
    """Propose the updates to every peer at once, one push per peer (thousands of
    deletions excepted); each peer's vote and the decision per ref, and how the
    pushes reached the peers (for the put-backs)."""
    declared = 1 + len(settings.peers)
    env, remotes = peer_environment(git_dir, environ, settings, name)
    reach = Reach(env, remotes)

    def one(peer: str) -> dict[str, Vote]:
        if peer not in remotes:
            return {u.ref: Vote(peer, False, reason="has no remote configured") for u in updates}
        votes: dict[str, Vote] = {}
        deadline = time.monotonic() + settings.timeout
        for chunk in lease_push.chunks(updates):
            try:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no time left")
                votes.update(_propose(git_dir, peer, chunk, reach, left))
            except Exception as exc:
                votes.update(
                    {u.ref: Vote(peer, False, reason="unreachable", detail=str(exc)) for u in chunk}
                )
        return votes

    answers = dict(zip(settings.peers, parallel_map(one, settings.peers)))  # noqa: B905
    decisions = {
        u.ref: decide(declared, [answers[p][u.ref] for p in settings.peers]) for u in updates
    }
    return answers, decisions, reach


def _refusals(
    git_dir: Path,
    settings: Settings,
    updates: Sequence[RefUpdate],
    answers: Mapping[str, Mapping[str, Vote]],
    decisions: Mapping[str, Decision],
    reach: Reach,
    atomic: bool,
) -> tuple[dict[str, str], bool]:
    """The refs the vote refuses, with the pusher's reason, and whether this server
    is behind on one of them (a majority holds another value); the peers they moved
    are put back."""
    refused = {u.ref for u in updates if not decisions[u.ref].accept}
    if atomic and refused:
        refused = {u.ref for u in updates}
    if not refused:
        return {}, False
    _undo(git_dir, settings, [u for u in updates if u.ref in refused], answers, reach)
    voted_down = [u for u in updates if u.ref in refused and not decisions[u.ref].accept]
    elsewhere = _majorities_elsewhere(git_dir, settings, voted_down, answers, reach.env)
    reasons: dict[str, str] = {}
    behind = False
    for update in updates:
        if update.ref not in refused:
            continue
        decision = decisions[update.ref]
        votes = [answers[p][update.ref] for p in settings.peers]
        if decision.accept:
            _emit_err(f"{update.ref}: not written: another ref of the same atomic push was refused")
            reasons[update.ref] = "atomic push failed"
            continue
        majority_value = elsewhere.get(update.ref)
        if majority_value is not None:
            behind = True
            _emit_err(
                f"{update.ref} refused: this server is behind on it (a majority holds "
                f"{majority_value[:12]}); it is catching up now: fetch and retry"
            )
            reasons[update.ref] = "this server is behind on it; fetch and retry"
        else:
            _emit_err(refusal_line(update.ref, decision, votes))
            reasons[update.ref] = "no majority of the servers could take it"
    return reasons, behind


def _undo(
    git_dir: Path,
    settings: Settings,
    updates: Sequence[RefUpdate],
    answers: Mapping[str, Mapping[str, Vote]],
    reach: Reach,
) -> None:
    """Put back every peer the proposal of ``updates`` moved (compare-and-swap)."""
    for peer in settings.peers:
        moved = [u for u in updates if answers[peer][u.ref].moved]
        if not moved:
            continue
        try:
            left = _put_back(git_dir, peer, moved, reach, settings.timeout)
        except Exception as exc:
            left = [u.ref for u in moved]
            _emit_err(f"put-back on {peer} failed: {exc}")
        for ref in left:
            _emit_err(
                f"{ref}: could not put {peer} back; it keeps the refused value until "
                f"reconcile apply moves it under {ABORTED_NAMESPACE}"
            )


def _accepted(
    base: Path,
    settings: Settings,
    name: str,
    updates: Sequence[RefUpdate],
    answers: Mapping[str, Mapping[str, Vote]],
    decisions: Mapping[str, Decision],
    environ: Mapping[str, str],
) -> None:
    if not updates:
        return
    declared = 1 + len(settings.peers)
    for update in updates[:SUMMARY_LINES]:
        _emit_err(f"{update.ref}: taken by {decisions[update.ref].holders} of {declared} servers")
    if len(updates) > SUMMARY_LINES:
        least = min(decisions[u.ref].holders for u in updates)
        more = len(updates) - SUMMARY_LINES
        _emit_err(f"... and {more} more refs, each taken by {least} or more servers")
    _queue_the_rest(base, settings, name, updates, answers, environ)


def _majorities_elsewhere(
    git_dir: Path,
    settings: Settings,
    updates: Sequence[RefUpdate],
    answers: Mapping[str, Mapping[str, Vote]],
    env: Mapping[str, str],
) -> dict[str, str]:
    """Per ref of ``updates`` that a majority of the servers holds at a value that is
    not this server's, that value: this server is behind (asked only on the refusal
    path, one ``ls-remote`` per peer for all the refs)."""
    needed = majority(1 + len(settings.peers))
    asked: dict[str, list[str]] = {}  # peer -> refs it said it holds another value of
    for update in updates:
        others = [p for p in settings.peers if answers[p][update.ref].reason == "other value"]
        if len(others) >= needed:
            for peer in others:
                asked.setdefault(peer, []).append(update.ref)
    counts: dict[tuple[str, str], int] = {}
    for peer, refs in asked.items():
        values = _peer_values(git_dir, peer, refs, env, settings.timeout) or {}
        for ref, value in values.items():
            counts[(ref, value)] = counts.get((ref, value), 0) + 1
    old = {u.ref: u.old for u in updates}
    found: dict[str, str] = {}
    for (ref, value), count in counts.items():
        if count >= needed and value != old[ref]:
            found.setdefault(ref, value)
    return found


def _queue_the_rest(
    base: Path,
    settings: Settings,
    name: str,
    updates: Sequence[RefUpdate],
    answers: Mapping[str, Mapping[str, Vote]],
    environ: Mapping[str, str],
) -> None:
    """An accepted update reaches the peers that did not take it through the queue:
    one queue file per peer, whatever the number of refs."""
    queued = False
    for peer in settings.peers:
        entries = []
        for update in updates:
            vote = answers[peer][update.ref]
            if vote.took:
                continue
            reason = vote.reason if vote.reason in TRANSIENT_REASONS else "pending"
            if vote.reason == "has no remote configured":
                reason = "no remote"
            entries.append(make_entry(settings, name, peer, update, reason, vote.detail))
            if len(entries) <= SUMMARY_LINES:
                _emit_err(f"{peer} did not take {update.ref} ({vote.reason}): queued")
        if len(entries) > SUMMARY_LINES:
            _emit_err(f"{peer} did not take {len(entries) - SUMMARY_LINES} more refs: queued")
        with contextlib.suppress(OSError):
            write_entries(base, entries)
            queued = queued or bool(entries)
    if queued:
        with contextlib.suppress(OSError):
            start_drainer(base, name, environ)


CATCH_UP_WAIT = 30.0  # seconds to wait for the aborted push to release the ref's lock


def _start_catch_up(base: Path, repository: str, environ: Mapping[str, str]) -> None:
    env = without_repository_env(environ)
    env["RECONCILER_REPLICA"] = "catch-up"
    with contextlib.suppress(OSError):
        start_detached(["--catch-up", str(base), repository], env)


def catch_up(base: Path, repository: str, deadline: float) -> list[str]:
    """Bring every replicated ref this server is behind on to the value a majority of
    the servers holds (compare-and-swap; never over a value of its own that is not an
    ancestor). Returns the refs it moved."""
    settings = load_settings(base)
    git_dir = repository_dir(base, repository)
    if git_dir is None:
        return []
    env = push_environment(os.environ, settings)
    env["GIT_DIR"] = str(git_dir)
    timeout = max(1.0, min(settings.timeout, deadline - time.monotonic()))
    remotes, _ssh_command = remote_names(git_dir, env, timeout)
    reach_peers_without_remote(env, settings, repository, remotes)
    values: dict[str, dict[str, str]] = {}
    for peer in settings.peers:
        run = run_bounded(
            ["git", "ls-remote", "--", peer, *QUORUM_PREFIXES_GLOBS], git_dir, env, timeout
        )
        if run.timed_out or run.returncode != 0:
            continue
        for line in run.stdout.splitlines():
            value, _, ref = line.partition("\t")
            if ref.startswith(QUORUM_PREFIXES) and not ref.endswith("^{}"):
                values.setdefault(ref, {})[peer] = value
    needed = majority(1 + len(settings.peers))
    moved = []
    for ref, held in sorted(values.items()):
        counts: dict[str, list[str]] = {}
        for peer, value in held.items():
            counts.setdefault(value, []).append(peer)
        for value, holders in counts.items():
            if len(holders) < needed:
                continue
            mine = run_bounded(
                ["git", "rev-parse", "--verify", "--quiet", ref], git_dir, env, timeout
            )
            ours = mine.stdout.strip()
            if ours == value:
                break
            fetched = run_bounded(
                ["git", "fetch", "--quiet", "--no-tags", holders[0], ref], git_dir, env, timeout
            )
            if fetched.returncode != 0:
                break
            if ours and not is_ancestor(git_dir, ours, value, env, timeout):
                break  # a value of its own: for the reconciler's repair, not overwritten here
            update = [
                "git",
                "update-ref",
                "-m",
                "reconcile quorum catch-up",
                ref,
                value,
                ours or "0" * len(value),
            ]
            if run_bounded(update, git_dir, env, timeout).returncode == 0:
                moved.append(ref)
            break
    return moved


QUORUM_PREFIXES_GLOBS = ("refs/heads/*", "refs/tags/*", "refs/notes/*")


def catch_up_main(args: Sequence[str]) -> int:
    if len(args) != 2:
        return 2
    base, repository = Path(args[0]), args[1]
    deadline = time.monotonic() + CATCH_UP_WAIT
    # The refusing hook has given back its locks before starting this.
    for _attempt in range(5):
        try:
            catch_up(base, repository, deadline)
            return 0
        except (OSError, SettingsError):
            if time.monotonic() > deadline:
                return 1
            time.sleep(1.0)
    return 1


# --- the kept foreign hook -----------------------------------------------------------


def kept_hook(git_dir: Path) -> Path | None:
    """The newest foreign post-receive apply kept, when it is executable."""
    hooks = git_dir / "hooks"
    try:
        names = sorted(n for n in os.listdir(hooks) if n.startswith(KEPT_HOOK_PREFIX))
    except OSError:
        return None
    if not names:
        return None
    # As git does with a hook that is not executable: it is not run.
    path = hooks / names[-1]
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _blocked_peers(environ: Mapping[str, str], peers: Sequence[str]) -> str:
    """GIT_CONFIG_PARAMETERS (as ``git -c`` passes it on) with every peer's push URL
    pointing nowhere, so that nothing the kept hook runs pushes to a peer."""
    entries = [
        f"remote.{peer}.pushurl=/dev/null/{peer}: the replication hook pushes to {peer}"
        for peer in peers
    ]
    quoted = " ".join("'" + e.replace("'", "'\\''") + "'" for e in entries)
    existing = environ.get("GIT_CONFIG_PARAMETERS", "")
    return f"{existing} {quoted}".strip()


def run_kept_hook(
    git_dir: Path, stdin_text: str, environ: Mapping[str, str], settings: Settings, emit: Emit
) -> None:
    path = kept_hook(git_dir)
    if path is None:
        return
    env = dict(environ)
    env["GIT_CONFIG_PARAMETERS"] = _blocked_peers(environ, settings.peers)
    argv = [str(path)]
    with contextlib.suppress(OSError), open(path, "rb") as handle:
        if handle.read(2) != b"#!":
            # exec refuses a script without an interpreter line; git ran it with sh.
            argv = ["/bin/sh", str(path)]
    done = bounded(
        argv,
        cwd=git_dir,
        env=env,
        stdin=stdin_text.encode("utf-8"),
        timeout=settings.timeout,
        gentle=False,
        merge_output=True,
    )
    for line in done.stdout.decode("utf-8", "replace").splitlines():
        emit(line)
    if done.timed_out:
        emit(f"kept post-receive hook {path.name} stopped after {settings.timeout:g}s")
    elif done.returncode != 0:
        emit(
            f"kept post-receive hook {path.name} exited with {done.returncode} "
            "(replication is not affected)"
        )


def _replicate_now(
    base: Path,
    git_dir: Path,
    settings: Settings,
    name: str,
    updates: Sequence[RefUpdate],
    environ: Mapping[str, str],
    emit: Emit,
    reported: set[str],
) -> None:
    env, remotes = peer_environment(git_dir, environ, settings, name)

    def one_peer(peer: str) -> str:
        # Written ahead (one file for all the push's updates), so that a hook killed
        # halfway still leaves every update queued.
        started = new_entry_name()
        ahead: dict[str, QueueEntry] = {}
        with contextlib.suppress(OSError):
            entries = [
                make_entry(settings, name, peer, update, "pending", "push in progress")
                for update in updates
            ]
            ahead = {entry.ref: entry for entry in write_entries(base, entries)}
        try:
            remote = remotes.get(peer, [])
            if any(key == "url" for key, _ in remote):
                pushing = time.monotonic()
                outcomes = push_to_peer(git_dir, peer, updates, env, settings.timeout, remote)
                record_push(base, peer, time.monotonic() - pushing, push_result(outcomes))
            else:
                outcomes = [RefOutcome(u, "no remote") for u in updates]
        except Exception as exc:
            missing = [u for u in updates if u.ref not in ahead]
            _queue_quietly(base, settings, name, peer, missing, "pending", str(exc))
            return f"replication hook error: pushing to {peer} failed ({exc}): queued"
        try:
            record_outcomes(base, settings, name, peer, outcomes, ahead, started)
        except OSError as exc:
            return f"{peer} failed and could not be queued: {exc}"
        return peer_line(peer, outcomes, settings.timeout)

    if not settings.peers:
        return
    lines = parallel_map(one_peer, settings.peers)
    for peer, line in zip(settings.peers, lines):  # noqa: B905 (strict= needs 3.10)
        emit(line)
        reported.add(peer)


def record_outcomes(
    base: Path,
    settings: Settings,
    repository: str,
    peer: str,
    outcomes: Sequence[RefOutcome],
    ahead: Mapping[str, QueueEntry],
    started: str,
) -> None:
    """Queue what the peer did not take; drop the entries of what it did. One write
    of the file written ahead (or one new file), whatever the number of refs."""
    delivered = set()
    changes: dict[str, QueueEntry | None] = {}
    fresh: list[QueueEntry] = []
    for outcome in outcomes:
        earlier = ahead.get(outcome.update.ref)
        if outcome.ok:
            delivered.add(outcome.update.ref)
            if earlier is not None:
                changes[earlier.name] = None
            continue
        entry = make_entry(
            settings, repository, peer, outcome.update, outcome.reason, outcome.detail
        )
        if earlier is not None:
            changes[earlier.name] = replace(entry, name=earlier.name)
        else:
            fresh.append(entry)
    if changes:
        try:
            update_entries(base, changes)
        except OSError:
            # What could not be rewritten in place is written anew; what could not be
            # removed stays "pending", and a drain finds it up to date.
            fresh += [e for e in changes.values() if e is not None]
    write_entries(base, fresh)
    supersede(base, repository, peer, delivered, started)


def supersede(base: Path, repository: str, peer: str, refs: set[str], before: str) -> None:
    """Drop older failed tries of refs whose later value has now reached the peer.

    Only while nobody drains the queue; whoever does will find them moot itself.
    """
    if not refs or not (base / QUEUE_PATH).is_dir():
        return
    with drain_lock(base) as held:
        if held:
            _supersede_locked(base, repository, peer, dict.fromkeys(refs, before))


def _supersede_locked(
    base: Path, repository: str, peer: str, before_by_ref: Mapping[str, str]
) -> None:
    entries, _ = read_entries(base)
    moot = [
        entry.name
        for entry in entries
        if (
            entry.repository == repository
            and entry.peer == peer
            and entry.ref in before_by_ref
            and entry.transient
            and entry.reason != "pending"
            and entry.name < before_by_ref[entry.ref]
        )
    ]
    if moot:
        with contextlib.suppress(OSError):
            update_entries(base, dict.fromkeys(moot))


def _queue_all(
    base: Path,
    settings: Settings,
    name: str,
    updates: Sequence[RefUpdate],
    environ: Mapping[str, str],
    emit: Emit,
    reported: set[str],
) -> None:
    queued = False
    for peer in settings.peers:
        # One file per peer for all the push's updates: thousands of refs cost one
        # write and two fsyncs, and the drainer's workers (one per peer) never
        # rewrite the same file.
        try:
            write_entries(
                base, [make_entry(settings, name, peer, u, "pending", "") for u in updates]
            )
            queued = queued or bool(updates)
        except OSError as exc:
            emit(f"{peer} could not be queued: {exc}")
        else:
            emit(f"{peer}: queued")
        reported.add(peer)
    if queued:
        start_drainer(base, name, environ)


def _queue_quietly(
    base: Path,
    settings: Settings,
    name: str,
    peer: str,
    updates: Sequence[RefUpdate],
    reason: str,
    detail: str,
) -> None:
    # Last resort after an unexpected error: the error line is already shown.
    with contextlib.suppress(Exception):
        write_entries(base, [make_entry(settings, name, peer, u, reason, detail) for u in updates])


def start_drainer(base: Path, repository: str, environ: Mapping[str, str]) -> None:
    """Start a drainer that git does not wait for."""
    env = without_repository_env(environ)
    start_detached(["--drain", str(base), "--repository", repository], env, cwd=base)


def start_detached(args: Sequence[str], env: Mapping[str, str], cwd: Path | None = None) -> None:
    """Run this module's ``main`` with ``args`` in a process git does not wait for: own
    session, no inherited pipes, from the library the hook itself runs from."""
    subprocess.Popen(
        [sys.executable or "python3", "-I", "-c", DRAINER, _LIBRARY, *args],
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        start_new_session=True,
    )


# --- the drainer ------------------------------------------------------------------------


@dataclass(frozen=True)
class DrainResult:
    delivered: int  # entries whose update the peer took (or already had)
    remaining: int  # entries of the kind drained that are still queued
    locked: bool  # another drainer held the lock, and has the rest

    def to_json(self) -> dict[str, object]:
        return {
            "format_version": FORMAT_VERSION,
            "delivered": self.delivered,
            "remaining": self.remaining,
            "locked": self.locked,
        }


def _selected(
    base: Path, repository: str | None, retry: bool, attempted: set[str]
) -> list[QueueEntry]:
    entries, _ = read_entries(base)
    return [
        e
        for e in entries
        if (retry or e.reason == "pending")
        and (repository is None or e.repository == repository)
        and e.name not in attempted
    ]


def drain(
    base: Path,
    repository: str | None = None,
    environ: Mapping[str, str] | None = None,
    max_seconds: float = DRAIN_SECONDS,
    retry: bool = False,
) -> DrainResult:
    """Deliver the queue's pending entries (with ``retry``, every entry).

    Each entry is tried at most once per drain, oldest first per ref; an entry
    that fails again is rewritten with the new reason. Pushes are the same
    compare-and-swap as the hook's, so retrying a diverged entry forces nothing.

    Entries another drainer is working on are left to it. After letting go of the
    lock the whole queue (every repository) is looked at once more: a hook whose
    drainer found the lock taken wrote its entries before that, so they are seen
    here or by the next holder.
    """
    settings = load_settings(base)
    environ = os.environ if environ is None else environ
    deadline = time.monotonic() + max_seconds
    delivered = 0
    locked = False
    attempted: set[str] = set()
    while time.monotonic() < deadline:
        with drain_lock(base) as held:
            if not held:
                locked = True
                break
            for _ in range(DRAIN_ROUNDS):
                todo = _selected(base, repository, retry, attempted)
                if not todo or time.monotonic() >= deadline:
                    break
                attempted.update(e.name for e in todo)
                delivered += _drain_round(base, settings, todo, environ, deadline)
        # A hook of another repository may have found the lock taken while this
        # drainer held it and left its pending entries to the holder: take them too.
        repository = None
        if not _selected(base, repository, retry, attempted):
            break
    remaining = len(_selected(base, repository, retry, set()))
    return DrainResult(delivered=delivered, remaining=remaining, locked=locked)


def _drain_round(
    base: Path,
    settings: Settings,
    pending: Sequence[QueueEntry],
    environ: Mapping[str, str],
    deadline: float,
) -> int:
    groups: dict[tuple[str, str], list[QueueEntry]] = {}
    for entry in pending:
        groups.setdefault((entry.repository, entry.peer), []).append(entry)
    delivered = 0
    lock = threading.Lock()

    def one_group(entries: list[QueueEntry]) -> None:
        nonlocal delivered
        count = _drain_group(base, settings, entries, environ, deadline)
        with lock:
            delivered += count

    # Only the drainer needs a bounded pool; the hooks do not import it.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=DRAIN_WORKERS) as pool:
        for future in [pool.submit(one_group, g) for g in groups.values()]:
            future.result()
    return delivered


def _drain_group(
    base: Path,
    settings: Settings,
    entries: list[QueueEntry],
    environ: Mapping[str, str],
    deadline: float,
) -> int:
    """Deliver one (repository, peer)'s entries, oldest first, one update per ref a push
    (all the refs of a round in one push), recording the outcomes with one write per
    queue file."""
    repository, peer = entries[0].repository, entries[0].peer
    git_dir = repository_dir(base, repository)
    if git_dir is None:
        _fail_all(base, entries, "missing repository", "not on this server")
        return 0
    env, remotes = peer_environment(git_dir, environ, settings, repository)
    remote = remotes.get(peer, [])
    delivered = 0
    remaining = list(entries)
    while remaining:
        batch: list[QueueEntry] = []
        later: list[QueueEntry] = []
        taken: set[str] = set()
        for entry in remaining:
            (later if entry.ref in taken else batch).append(entry)
            taken.add(entry.ref)
        left = deadline - time.monotonic()
        if left <= 0:
            return delivered  # still pending: the next drain or apply takes them
        if not any(key == "url" for key, _ in remote):
            outcomes = [RefOutcome(e.update, "no remote") for e in batch]
        else:
            pushing = time.monotonic()
            outcomes = push_to_peer(
                git_dir, peer, [e.update for e in batch], env, min(settings.timeout, left), remote
            )
            record_push(base, peer, time.monotonic() - pushing, push_result(outcomes))
        stop = ""
        reached: dict[str, str] = {}
        changes: dict[str, QueueEntry | None] = {}
        for entry, outcome in zip(batch, outcomes):  # noqa: B905 (strict= needs 3.10)
            if outcome.ok:
                changes[entry.name] = None
                delivered += 1
                reached[entry.ref] = entry.name
            else:
                changes[entry.name] = _failed(entry, outcome.reason, outcome.detail)
                if outcome.reason in (*TRANSIENT_REASONS, "missing repository", "denied"):
                    stop = outcome.reason
        with contextlib.suppress(OSError):
            update_entries(base, changes)
        if reached:
            _supersede_locked(base, repository, peer, reached)
        if stop:
            # The peer as a whole is not taking pushes now: do not try every entry.
            _fail_all(base, later, stop, "not tried: an earlier push to this peer failed")
            return delivered
        remaining = later
    return delivered


def _failed(entry: QueueEntry, reason: str, detail: str) -> QueueEntry:
    return replace(entry, reason=reason, transient=reason in TRANSIENT_REASONS, detail=detail)


def _fail_all(base: Path, entries: Sequence[QueueEntry], reason: str, detail: str) -> None:
    with contextlib.suppress(OSError):
        update_entries(base, {e.name: _failed(e, reason, detail) for e in entries})


def drain_main(args: Sequence[str]) -> int:
    """``--drain BASE [--repository NAME] [--retry]``: prints one JSON line."""
    usage = "usage: post-receive --drain BASE [--repository NAME] [--retry]\n"
    rest = list(args)
    retry = "--retry" in rest
    rest = [a for a in rest if a != "--retry"]
    repository = None
    if len(rest) == 3 and rest[1] == "--repository":
        repository = rest.pop()
        rest.pop()
    if len(rest) != 1 or rest[0].startswith("-"):
        sys.stderr.write(usage)
        return 2
    try:
        result = drain(Path(rest[0]), repository, retry=retry)
    except (OSError, SettingsError) as exc:
        sys.stderr.write(f"replication drain error: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(result.to_json(), sort_keys=True) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--drain"]:
        return drain_main(args[1:])
    if args[:1] == ["--catch-up"]:
        return catch_up_main(args[1:])
    # The pusher hanging up (^C, a dropped connection) must not cut the hook short
    # between a peer's push and its queue entry.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        stdin_text = sys.stdin.read()
    except (OSError, UnicodeDecodeError) as exc:
        _emit(f"replication hook error: cannot read the updates: {exc}")
        return 0
    return run_hook(stdin_text, os.environ)


def transaction_main(argv: Sequence[str] | None = None) -> int:
    """hooks/reference-transaction as the release before proc-receive linked it: the
    decision is proc-receive's now, so an old link lets every transaction through
    until apply removes it (post-receive replicates a push that proc-receive did not
    see)."""
    return 0


if __name__ == "__main__":
    sys.exit(main())
