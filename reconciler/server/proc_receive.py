"""Quorum mode's decision point: git's ``proc-receive`` hook.

In quorum mode every mirrored repository has ``receive.procReceiveRefs`` set to the
replicated ref prefixes and ``hooks/proc-receive`` linked to its stub, which runs
``main`` here. receive-pack then hands this program every command of a
push at once (after ``pre-receive``, with the pushed objects already in the
repository) and writes none of those refs itself: this program writes them, and
answers ``ok REF`` or ``ng REF REASON`` per ref, which the pusher sees as git's own
``[remote rejected] ... (REASON)``.

Why not ``reference-transaction``: git 2.39's receive-pack runs one ref transaction
per ref, so that hook starts once (twice: prepared, committed) per ref — a push of
3,000 tags started 6,000 hook processes and took 10x the push itself. Here a push
is one process and one ref transaction whatever its size.

A user's push: the refs are locked on this server in one ``git update-ref --stdin``
transaction (``start``/``prepare``: git's own ``REF.lock`` files, held until the
votes are counted, so a peer's proposal of another value here fails to lock), the
update is proposed to every peer at once with compare-and-swap (while the locks are
being taken; a ref this server could not lock is refused and put back), and it is committed for
the refs a majority of the declared servers holds (``replication.quorum_round``).
A peer's proposal or put-back (``GITOSIS_USER`` one of the mirror users, or
``RECONCILER_REPLICA`` set) is written with the same compare-and-swap and never
proposed onward. The protocol: docs/quorum.md.

receive-pack skips its own checks for the refs it hands over, so a person's push is
held to them here: ``receive.denyDeletes``, ``receive.denyNonFastForwards``,
``receive.denyDeleteCurrent`` (the branch HEAD names in a bare repository) and an
executable ``hooks/update``.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from reconciler.server.common import (
    PROC_RECEIVE_REFS,
    bounded,
    is_ancestor,
    parse_git_config,
    read_text,
)
from reconciler.server.queue import RefUpdate, is_zero

LOCK_TIMEOUT = 30.0  # seconds for update-ref to take or give back the locks
# One attempt per ref that turns out locked or moved while taking the locks, at most.
LOCK_ATTEMPTS = 8

_CANNOT_LOCK = re.compile(r"cannot lock ref '([^']+)': (.*)")


class ProtocolError(Exception):
    pass


# --- pkt-line, as receive-pack speaks it to the hook ------------------------------------


def read_pkt(stream: BinaryIO) -> bytes | None:
    """One pkt-line's payload; None for a flush packet."""
    head = stream.read(4)
    if len(head) != 4:
        raise ProtocolError("receive-pack closed the conversation")
    try:
        size = int(head, 16)
    except ValueError:
        raise ProtocolError(f"bad pkt-line length {head!r}") from None
    if size == 0:
        return None
    if size < 4:
        return b""  # delim / response-end: nothing receive-pack sends here
    payload = stream.read(size - 4)
    if len(payload) != size - 4:
        raise ProtocolError("receive-pack closed the conversation")
    return payload


def read_until_flush(stream: BinaryIO) -> list[bytes]:
    lines: list[bytes] = []
    for _ in range(1 << 22):  # bounded: receive-pack sends one line per command
        payload = read_pkt(stream)
        if payload is None:
            return lines
        lines.append(payload)
    raise ProtocolError("too many lines before a flush")


def pkt(text: str) -> bytes:
    data = text.encode("utf-8") + b"\n"
    return b"%04x" % (len(data) + 4) + data


FLUSH = b"0000"


def reason_text(reason: str) -> str:
    """A result's reason: one line, short enough for a pkt-line."""
    return " ".join(reason.split())[:900]


# --- the checks receive-pack leaves to the hook -----------------------------------------


def _config_value(
    config: Mapping[tuple[str, str | None], Mapping[str, list[str]]], key: str
) -> str:
    section, _, name = key.partition(".")
    values = config.get((section, None), {}).get(name.lower(), [])
    return values[-1] if values else ""


def _true(value: str) -> bool:
    return value.lower() in ("true", "yes", "on", "1")


def receive_checks(
    git_dir: Path, updates: Sequence[RefUpdate], env: Mapping[str, str], timeout: float
) -> dict[str, str]:
    """The refs receive-pack would have refused itself, with its reason."""
    config = parse_git_config(read_text(str(git_dir / "config")) or "")
    head = (read_text(str(git_dir / "HEAD"), 4096) or "").strip()
    current = head[len("ref: ") :] if head.startswith("ref: ") else ""
    deny_deletes = _true(_config_value(config, "receive.denyDeletes"))
    deny_nff = _true(_config_value(config, "receive.denyNonFastForwards"))
    delete_current = _config_value(config, "receive.denyDeleteCurrent").lower()
    refused: dict[str, str] = {}
    for update in updates:
        if is_zero(update.new):
            if deny_deletes and update.ref.startswith("refs/heads/"):
                refused[update.ref] = "deletion prohibited"
            elif update.ref == current and delete_current not in ("ignore", "warn", "false", "no"):
                refused[update.ref] = "deletion of the current branch prohibited"
        elif (
            deny_nff
            and not is_zero(update.old)
            and update.ref.startswith("refs/heads/")
            and not is_ancestor(git_dir, update.old, update.new, env, timeout)
        ):
            refused[update.ref] = "non-fast-forward"
    hook = git_dir / "hooks" / "update"
    if os.access(hook, os.X_OK) and hook.is_file():
        for update in updates:
            if update.ref in refused:
                continue
            argv = [str(hook), update.ref, update.old, update.new]
            done = bounded(argv, cwd=git_dir, env=env, timeout=timeout)
            # As receive-pack runs it: all it says goes to the pusher.
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.buffer.write(done.stdout + done.stderr)
                sys.stderr.flush()
            if done.timed_out or done.returncode != 0:
                refused[update.ref] = "hook declined"
    return refused


# --- one ref transaction, held open while the peers vote ---------------------------------


def current_values(git_dir: Path, env: Mapping[str, str], timeout: float) -> dict[str, str]:
    argv = ["git", "for-each-ref", "--format=%(objectname) %(refname)", *PROC_RECEIVE_REFS]
    done = bounded(argv, cwd=git_dir, env=env, timeout=timeout, gentle=False)
    values = {}
    for line in done.stdout.decode("utf-8", "replace").splitlines():
        value, _, ref = line.partition(" ")
        values[ref] = value
    return values


def _pipe(stream: IO[bytes] | None) -> IO[bytes]:
    if stream is None:  # Popen with PIPE always has it
        raise OSError("update-ref has no pipe")
    return stream


@dataclass
class Transaction:
    """``git update-ref --stdin`` between ``prepare`` and ``commit``/``abort``: git
    holds every ref's lock; EOF (this program killed) makes git abort."""

    child: subprocess.Popen[bytes]
    updates: list[RefUpdate]

    def _finish(self, word: str) -> bool:
        try:
            out, _err = self.child.communicate(f"{word}\n".encode(), timeout=LOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(self.child.pid, signal.SIGKILL)
            self.child.wait()
            return False
        except (OSError, ValueError):
            self.child.wait(timeout=LOCK_TIMEOUT)
            return False
        return self.child.returncode == 0 and f"{word}: ok".encode() in out

    def commit(self) -> bool:
        return self._finish("commit")

    def abort(self) -> None:
        self._finish("abort")


def _read_answer(child: subprocess.Popen[bytes], word: bytes, deadline: float) -> bool:
    """Wait for update-ref's ``WORD: ok`` line; False when it stopped instead."""
    seen = b""
    fd = _pipe(child.stdout).fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            return False
        seen += chunk
        if word + b": ok\n" in seen:
            return True
    return False


def _start(
    git_dir: Path, updates: Sequence[RefUpdate], env: Mapping[str, str]
) -> tuple[Transaction | None, str]:
    """Lock the refs; the transaction, or None with update-ref's complaint."""
    child = subprocess.Popen(
        ["git", "update-ref", "-m", "push", "--stdin"],
        cwd=git_dir,
        env=dict(env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    lines = ["start"]
    for update in updates:
        lines.append(f"update {update.ref} {update.new} {update.old}")
    lines.append("prepare")
    try:
        stdin = _pipe(child.stdin)
        stdin.write(("\n".join(lines) + "\n").encode())
        stdin.flush()
    except OSError:
        pass
    if _read_answer(child, b"prepare", time.monotonic() + LOCK_TIMEOUT):
        return Transaction(child, list(updates)), ""
    with contextlib.suppress(OSError):
        os.killpg(child.pid, signal.SIGKILL)
    try:
        _out, err = child.communicate(timeout=LOCK_TIMEOUT)
    except subprocess.TimeoutExpired:
        err = b""
    return None, err.decode("utf-8", "replace")


def lock(
    git_dir: Path, updates: Sequence[RefUpdate], env: Mapping[str, str], timeout: float
) -> tuple[Transaction | None, dict[str, str]]:
    """Lock every ref of ``updates`` that still holds its old value, in one transaction.

    Returns the transaction (None when nothing could be locked) and the refs left
    out, with why: another value here, or a lock someone else holds.
    """
    if not updates:
        return None, {}
    # Nearly always every ref still holds its old value and nobody holds its lock:
    # one transaction takes them all, without reading the refs first (a git process
    # less on every push's path, and on every peer's for each proposal). Otherwise git
    # aborted it whole, and the refs are looked at one by one.
    transaction, _complaint = _start(git_dir, updates, env)
    if transaction is not None:
        return transaction, {}
    values = current_values(git_dir, env, timeout)
    refused: dict[str, str] = {}
    todo = []
    for update in updates:
        if values.get(update.ref, "0" * len(update.old)) != update.old:
            refused[update.ref] = "failed to update ref: it moved meanwhile; fetch and retry"
        else:
            todo.append(update)
    for _attempt in range(LOCK_ATTEMPTS):
        if not todo:
            return None, refused
        transaction, complaint = _start(git_dir, todo, env)
        if transaction is not None:
            return transaction, refused
        match = _CANNOT_LOCK.search(complaint)
        culprit = match.group(1) if match else None
        if culprit is None or culprit not in {u.ref for u in todo}:
            why = complaint.strip().splitlines()[-1] if complaint.strip() else "update-ref failed"
            refused.update({u.ref: f"failed to update ref: {why}" for u in todo})
            return None, refused
        refused[culprit] = f"failed to lock: {match.group(2).strip() if match else ''}".strip()
        todo = [u for u in todo if u.ref != culprit]
    refused.update({u.ref: "failed to lock: busy; fetch and retry" for u in todo})
    return None, refused


def write_unvoted(
    git_dir: Path,
    updates: Sequence[RefUpdate],
    env: Mapping[str, str],
    timeout: float,
    atomic: bool,
    results: dict[str, str | None],
) -> dict[str, str | None]:
    """Write ``updates`` with compare-and-swap alone (a peer's proposal or put-back, a
    write outside quorum mode); ``results`` (ref -> None or why not) updated.  With
    ``atomic``, nothing is written when any ref cannot be."""
    transaction, refused = lock(git_dir, updates, env, timeout)
    results.update(refused)
    if transaction is None:
        return results
    if atomic and refused:
        transaction.abort()
        return {ref: why or "atomic push failed" for ref, why in results.items()}
    if not transaction.commit():
        results.update({u.ref: "failed to update ref" for u in transaction.updates})
    return results


def peers_write(environ: Mapping[str, str]) -> float | None:
    """The timeout when this push is a peer's proposal or put-back to a managed
    repository (read as the hook gate reads it: ``hook_gate.peer_settings``); None
    for anything else, which the replication module decides."""
    from reconciler.server import hook_gate

    data = hook_gate.peer_settings(environ)
    if data is None:
        return None
    timeout = data.get("timeout", 30)
    return float(timeout) if isinstance(timeout, (int, float)) else None


# --- the program ---------------------------------------------------------------------


def parse_commands(lines: Sequence[bytes]) -> list[RefUpdate]:
    updates = []
    for raw in lines:
        parts = raw.decode("utf-8", "replace").split()
        if len(parts) != 3:
            raise ProtocolError(f"unexpected command {raw[:200]!r}")
        updates.append(RefUpdate(old=parts[0], new=parts[1], ref=parts[2]))
    return updates


def emit_err(line: str) -> None:
    # The pusher sees the hook's stderr as "remote: ..." lines.
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def main(
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    environ = os.environ if environ is None else environ
    # The pusher hanging up must not cut the vote short between a peer taking the
    # value and its put-back or commit.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        greeting = read_until_flush(stdin)
        version = greeting[0].split(b"\0")[0].strip() if greeting else b""
        if version != b"version=1":
            raise ProtocolError(f"receive-pack speaks {version!r}, not version=1")
        atomic = b"atomic" in (greeting[0].split(b"\0", 1)[1:] or [b""])[0].split()
        stdout.write(pkt("version=1") + FLUSH)
        stdout.flush()
        updates = parse_commands(read_until_flush(stdin))
    except (ProtocolError, OSError) as exc:
        emit_err(f"quorum hook error: {exc}")
        return 1
    timeout = peers_write(environ)
    if timeout is not None:
        # A peer's proposal or put-back: written with compare-and-swap, never voted on
        # or proposed onward, and answered without importing the replication module
        # (its import costs several times this program's start, on every proposal's
        # path: the proposer waits for this answer).
        git_dir = Path(os.path.abspath(environ.get("GIT_DIR", ".")))
        env = {k: v for k, v in environ.items() if k != "GIT_QUARANTINE_PATH"}
        todo = [u for u in updates if u.old != u.new]
        results = write_unvoted(git_dir, todo, env, timeout, atomic, {u.ref: None for u in updates})
    else:
        from reconciler.server import hook_gate

        # The quorum round and the settings.
        replication = hook_gate.import_frozen("reconciler.server.replication")
        results = replication.proc_receive(updates, environ, atomic)
    out = b"".join(
        pkt(f"ok {u.ref}") if results.get(u.ref) is None else pkt(f"ng {u.ref} {results[u.ref]}")
        for u in updates
    )
    try:
        stdout.write(out + FLUSH)
        stdout.flush()
    except OSError:
        return 1
    return 0


def configured(git_dir: Path) -> bool:
    """Whether receive-pack hands this repository's pushes to proc-receive."""
    config = parse_git_config(read_text(str(git_dir / "config")) or "")
    return bool(config.get(("receive", None), {}).get("procreceiverefs"))
