"""Running git on the operator's side (the admin checkout). The only module that does.

Every call is an argv list; failures become ``GitError`` with everything git said on
stderr (its last line alone is often only the tail of a sentence, as in
"and the repository exists.").
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from reconciler.errors import ReconcilerError
from reconciler.server import common
from reconciler.server.common import atomic_write, without_repository_env


class GitError(ReconcilerError):
    pass


def _git(
    repo: Path, *args: str, stdin: bytes = b"", timeout: float = 600
) -> subprocess.CompletedProcess[bytes]:
    """``git -C repo ARGS``, whatever its exit status; a git that cannot start or runs
    out of time is a ``GitError``."""
    try:
        return subprocess.run(
            ["git", "-C", str(repo), *args],
            input=stdin,
            capture_output=True,
            env=_environment(),
            check=False,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"{repo}: running git {args[0]} failed: {exc}") from exc


def _environment() -> dict[str, str]:
    env = without_repository_env(os.environ)
    env.setdefault("GIT_TERMINAL_PROMPT", "0")
    return env


def run_git(repo: Path, *args: str, stdin: bytes = b"", check: bool = True) -> str:
    done = _git(repo, *args, stdin=stdin)
    if check and done.returncode != 0:
        said = " ".join(
            line.strip() for line in done.stderr.decode("utf-8", "replace").splitlines()
        ).strip()
        raise GitError(f"{repo}: git {args[0]} failed: {said or f'exit status {done.returncode}'}")
    return done.stdout.decode("utf-8", "replace")


def toplevel(path: Path) -> Path | None:
    """The top directory of the work tree ``path`` is in, or None outside one."""
    out = run_git(path, "rev-parse", "--show-toplevel", check=False).strip()
    return Path(out).resolve() if out else None


def head(repo: Path) -> str | None:
    out = run_git(repo, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False).strip()
    return out or None


def current_branch(repo: Path) -> str:
    return run_git(repo, "symbolic-ref", "--short", "-q", "HEAD", check=False).strip() or "master"


def has_commit(repo: Path, sha: str) -> bool:
    return _git(repo, "cat-file", "-e", f"{sha}^{{commit}}").returncode == 0


def committed_contents(repo: Path, paths: list[str]) -> dict[str, str | None]:
    """The content of ``paths`` at HEAD (None where absent), in one git process."""
    if not paths or head(repo) is None:
        return dict.fromkeys(paths)
    request = "".join(f"HEAD:{path}\n" for path in paths).encode()
    out = _git(repo, "cat-file", "--batch", stdin=request, timeout=120).stdout
    contents: dict[str, str | None] = {}
    position = 0
    for path in paths:
        end = out.index(b"\n", position)
        header = out[position:end].split()
        position = end + 1
        if len(header) == 3 and header[1] == b"blob":
            size = int(header[2])
            contents[path] = out[position : position + size].decode("utf-8", "replace")
            position += size + 1
        else:
            contents[path] = None
    return contents


def changed_paths(repo: Path, *pathspecs: str) -> list[str]:
    """Paths under ``pathspecs`` that differ from HEAD in the working tree (or are new)."""
    out = run_git(repo, "status", "--porcelain", "--untracked-files=all", "--", *pathspecs)
    return sorted(line[3:] for line in out.splitlines() if len(line) > 3)


def is_ancestor(repo: Path, ancestor: str, descendant: str) -> bool:
    """``common.is_ancestor`` in ``repo`` (False when git cannot tell in 600 s)."""
    try:
        return common.is_ancestor(repo, ancestor, descendant, _environment(), timeout=600)
    except OSError as exc:
        raise GitError(f"{repo}: running git merge-base failed: {exc}") from exc


def bundle(repo: Path, ref: str) -> bytes:
    """A bundle holding the whole history of ``ref`` (the admin repository is small)."""
    with tempfile.TemporaryDirectory(prefix="reconciler-bundle-") as directory:
        path = Path(directory) / "admin.bundle"
        run_git(repo, "bundle", "create", "--quiet", str(path), ref)
        return path.read_bytes()


def fetch_bundle(repo: Path, data: bytes, ref: str) -> None:
    """Fetch ``ref`` from a bundle into ``repo``'s objects (FETCH_HEAD only, no ref moved)."""
    with tempfile.TemporaryDirectory(prefix="reconciler-bundle-") as directory:
        path = Path(directory) / "admin.bundle"
        path.write_bytes(data)
        run_git(repo, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", str(path), ref)


def commit_files(
    repo: Path,
    files: dict[str, str],
    message: str,
    also: tuple[str, ...] = (),
    remove: tuple[str, ...] = (),
) -> str:
    """Write ``files`` (relative path -> content), delete ``remove`` (paths under the
    ``also`` pathspecs) and commit them together with the working-tree state of the
    ``also`` pathspecs; return the commit."""
    for relative, content in files.items():
        target = repo / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, content.encode("utf-8"))
    for relative in remove:
        try:
            (repo / relative).unlink()
        except FileNotFoundError:
            continue
    paths = [*files, *also]
    run_git(repo, "add", "--all", "--", *paths)
    staged = run_git(repo, "diff", "--cached", "--name-only", "--", *paths).split()
    if staged:
        identity: list[str] = []
        if not run_git(repo, "config", "user.email", check=False).strip():
            identity = ["-c", "user.name=reconcile", "-c", "user.email=reconcile@localhost"]
        run_git(
            repo,
            *identity,
            "commit",
            "--quiet",
            "--no-verify",
            "-m",
            message,
            "--",
            *paths,
        )
    sha = head(repo)
    if sha is None:
        raise GitError(f"{repo}: no commit after writing {', '.join(files)}")
    return sha
