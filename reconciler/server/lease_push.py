"""One compare-and-swap ``git push`` of any number of ref updates, in time linear in them.

git's own handling of many explicit refspecs and leases is quadratic (git 2.39): every
``<new>:<ref>`` refspec is matched against every local ref, and every
``--force-with-lease=<ref>:<old>`` against every ref the peer advertises, formatting
six candidate names per pair. A push of 3,000 tags that way spends seconds of CPU
before it sends a byte, and chunking does not help (each chunk still meets every ref).

So the push runs from a throw-away repository (a "workspace") that borrows the real
repository's objects (``objects/info/alternates``) and holds exactly the push's refs
in one packed-refs file, written without a process. The new values are under
``refs/new/``, all sent by the one pattern ``refs/new/*:refs/*`` (git pairs pattern
matches with the peer's refs through a hash map). The compare-and-swap of each ref:

- an update or deletion of a ref that exists (``old`` not zero) has its lease
  ``--force-with-lease=<ref>:<old>``, as long as there are at most
  ``EXPLICIT_LEASES_MAX`` of them (their cost grows with the peer's refs);
- a creation is sent without force, so the peer takes it only where the ref is
  absent (or, for a branch, where it holds an ancestor: nothing is lost, and the
  caller's second look would have fast-forwarded it anyway); a peer holding another
  value rejects it ("already exists", "non-fast-forward", "fetch first"), as a
  lease requiring the ref to be absent would;
- with more leases than that, every ref's expected value goes under ``refs/old/``
  and one bare ``--force-with-lease`` takes each ref's remote-tracking ref as its
  lease (the workspace's remote maps the peer's refs there, fetch refspec
  ``refs/*:refs/old/*``; no ``refs/old/`` ref means "must be absent"). git then
  writes those tracking refs back after the push, one small file per ref, in the
  workspace: linear, and only for pushes that move many existing refs.

``exact`` (quorum mode's proposals and put-backs, where a peer's vote must say whether
it held the expected value) leases every creation outside ``refs/tags/`` too (with
an empty lease: "must be absent"), so that no branch or notes ref is fast-forwarded
from a value the proposal did not expect; a tag's creation needs none, git never
moves an existing tag without force.

Deletions stay explicit ``:<ref>`` refspecs: git has no pattern that deletes. The
workspace's config includes the real repository's (ssh command, URL rewrites) and
names the peer's remote ``LEASE_REMOTE``, with the peer's URLs, so that no fetch
refspec the real remote may carry (a ``git clone --mirror`` leaves one) changes the
mapping. Its hooks directory is empty: nothing runs for its own ref updates.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from reconciler.server.queue import RefUpdate, is_zero

LEASE_REMOTE = "reconciler-peer"
NEW = "refs/new/"
OLD = "refs/old/"
# Remote settings a push uses, copied to the workspace's remote (the rest of the real
# config comes in through the include).
REMOTE_KEYS = ("url", "pushurl", "receivepack")
# Deletions per command: each is an argument, and the command line has a limit.
DELETE_CHUNK = 1000
# Explicit leases per push, beyond which tracking refs carry them (see above).
EXPLICIT_LEASES_MAX = 16
REMOTE_CONFIG_ARGV = (
    "git",
    "config",
    "-z",
    "--get-regexp",
    r"^(remote\..*\.(url|pushurl|receivepack)|core\.sshcommand)$",
)


def parse_remote_config(stdout: str) -> tuple[dict[str, list[tuple[str, str]]], bool]:
    """From ``REMOTE_CONFIG_ARGV``'s output: per remote, its (key, value) settings a push
    uses; and whether core.sshCommand is configured."""
    remotes: dict[str, list[tuple[str, str]]] = {}
    ssh_command = False
    for item in stdout.split("\0"):
        key, _, value = item.partition("\n")
        if key.lower() == "core.sshcommand":
            ssh_command = True
            continue
        if not key.startswith("remote."):
            continue
        name, _, setting = key[len("remote.") :].rpartition(".")
        if name and setting.lower() in REMOTE_KEYS:
            remotes.setdefault(name, []).append((setting.lower(), value))
    return remotes, ssh_command


def _quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _local(ref: str, namespace: str) -> str:
    return namespace + ref[len("refs/") :]


def leased(update: RefUpdate, exact: bool = False) -> bool:
    """Whether ``update`` needs a lease for its compare-and-swap (see above)."""
    return not is_zero(update.old) or (exact and not update.ref.startswith("refs/tags/"))


def tracking_leases(updates: Sequence[RefUpdate], exact: bool = False) -> bool:
    """Whether the leases of ``updates`` go through tracking refs (see above)."""
    return sum(1 for u in updates if leased(u, exact)) > EXPLICIT_LEASES_MAX


def write_workspace(
    directory: Path,
    git_dir: Path,
    remote: Sequence[tuple[str, str]],
    updates: Sequence[RefUpdate],
    exact: bool = False,
) -> None:
    """Lay out the workspace for pushing ``updates`` to the remote ``remote`` describes."""
    objects = directory / "objects"
    (objects / "info").mkdir(parents=True)
    (directory / "refs").mkdir()
    (directory / "hooks").mkdir()
    (directory / "HEAD").write_text("ref: refs/heads/reconciler-workspace\n")
    real_objects = os.path.abspath(git_dir / "objects")
    (objects / "info" / "alternates").write_text(real_objects + "\n")
    sha256 = any(len(u.new) == 64 or len(u.old) == 64 for u in updates)
    lines = [
        f"[include]\n\tpath = {_quoted(os.path.abspath(git_dir / 'config'))}",
        "[core]",
        f"\trepositoryformatversion = {1 if sha256 else 0}",
        "\tbare = true",
        "\tlogAllRefUpdates = false",
        f"\thooksPath = {_quoted(str(directory / 'hooks'))}",
        "[gc]\n\tauto = 0",
        "[push]\n\tfollowTags = false",
    ]
    if sha256:
        lines.append("[extensions]\n\tobjectFormat = sha256")
    lines.append(f'[remote "{LEASE_REMOTE}"]')
    lines += [f"\t{key} = {_quoted(value)}" for key, value in remote]
    tracking = tracking_leases(updates, exact)
    if tracking:
        lines.append(f"\tfetch = refs/*:{OLD}*")
    (directory / "config").write_text("\n".join(lines) + "\n")
    packed = []
    for update in updates:
        if not is_zero(update.new):
            packed.append(f"{update.new} {_local(update.ref, NEW)}\n")
        if tracking and not is_zero(update.old):
            packed.append(f"{update.old} {_local(update.ref, OLD)}\n")
    # No "sorted" trait: git sorts the file itself when it reads it.
    (directory / "packed-refs").write_text("".join(packed))


@contextlib.contextmanager
def workspace(
    git_dir: Path,
    remote: Sequence[tuple[str, str]],
    updates: Sequence[RefUpdate],
    exact: bool = False,
) -> Iterator[Path]:
    """A workspace for ``updates`` in a temporary directory, removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="reconciler-push-"))
    try:
        write_workspace(directory, git_dir, remote, updates, exact)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def push_argv(updates: Sequence[RefUpdate], exact: bool = False) -> list[str]:
    """The one ``git push`` (run in the workspace) of ``updates``, each ref leased."""
    deletions = [u.refspec for u in updates if is_zero(u.new)]
    sends = [f"{NEW}*:refs/*"] if len(deletions) < len(updates) else []
    if tracking_leases(updates, exact):
        leases = ["--force-with-lease"]
    else:
        leases = [u.lease for u in updates if leased(u, exact)]
    return ["git", "push", "--porcelain", *leases, "--", LEASE_REMOTE, *sends, *deletions]


def chunks(updates: Sequence[RefUpdate]) -> list[list[RefUpdate]]:
    """The pushes ``updates`` take: every update in the first but deletions, at most
    ``DELETE_CHUNK`` of them per push."""
    sends = [u for u in updates if not is_zero(u.new)]
    deletions = [u for u in updates if is_zero(u.new)]
    first = sends + deletions[:DELETE_CHUNK]
    rest = deletions[DELETE_CHUNK:]
    return [first] + [rest[i : i + DELETE_CHUNK] for i in range(0, len(rest), DELETE_CHUNK)]


def workspace_env(environ: Mapping[str, str], directory: Path) -> dict[str, str]:
    env = dict(environ)
    env["GIT_DIR"] = str(directory)
    return env
