"""The operator's git, and the local transport, ignore variables that pin git to
another repository (``reconcile validate`` runs inside git's pre-push hook, where
git may have set them)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler import git
from reconciler.transport.local import LocalTransport


def _repository_with_a_commit(path: Path) -> str:
    path.mkdir()
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "PATH": "/usr/bin:/bin",
    }
    subprocess.run(["git", "init", "--quiet", str(path)], check=True, env=env, timeout=60)
    (path / "file.txt").write_text("one\n")
    subprocess.run(["git", "-C", str(path), "add", "file.txt"], check=True, env=env, timeout=60)
    subprocess.run(
        ["git", "-C", str(path), "commit", "--quiet", "-m", "one"], check=True, env=env, timeout=60
    )
    done = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip()


@pytest.fixture
def pinned_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A repository with one commit, and an environment that points git's object
    store at another, empty, repository (as a hook's environment can)."""
    repo = tmp_path / "checkout"
    commit = _repository_with_a_commit(repo)
    other = tmp_path / "other.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(other)], check=True, timeout=60)
    monkeypatch.setenv("GIT_OBJECT_DIRECTORY", str(other / "objects"))
    monkeypatch.setenv("GIT_COMMON_DIR", str(other))
    return repo, commit


def test_the_git_module_reads_the_repository_it_is_given(
    pinned_elsewhere: tuple[Path, str],
) -> None:
    repo, commit = pinned_elsewhere
    assert git.has_commit(repo, commit)
    assert git.head(repo) == commit
    assert git.committed_contents(repo, ["file.txt"]) == {"file.txt": "one\n"}
    assert git.is_ancestor(repo, commit, commit)


def test_a_local_server_runs_git_in_its_own_repositories(
    pinned_elsewhere: tuple[Path, str],
) -> None:
    repo, commit = pinned_elsewhere
    transport = LocalTransport("alpha", repo.parent)
    done = transport.run(["git", "--git-dir", str(repo / ".git"), "cat-file", "-e", commit])
    assert done.returncode == 0, done.stderr
