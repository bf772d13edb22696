"""The quorum hook on local servers (directories), with real git: it decides in
reference-transaction's prepared state, ignores HEAD and repairs, and puts back."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from reconciler.replication import settings_json
from reconciler.testing.library import install_server_library

NAMES = ("a", "b", "c")


def git(cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=60, check=False
    )
    if check and done.returncode:
        raise AssertionError(f"git {' '.join(args)}: {done.stderr}")
    return done.stdout.strip() + done.stderr.strip() if not check else done.stdout.strip()


def make(tmp: Path, peers_with_remote: tuple[str, ...] = NAMES) -> dict[str, Path]:
    repos = {}
    for name in NAMES:
        base = tmp / name / "repositories"
        (base / ".reconciler").mkdir(parents=True)
        repo = base / "p.git"
        subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True, timeout=60)
        hook = repo / "hooks" / "post-receive"
        # The library in the server's home and the stub in the repository, as apply
        # installs them; reference-transaction links to the stub.
        hook.write_bytes(install_server_library(tmp / name))
        hook.chmod(0o755)
        (repo / "hooks" / "reference-transaction").symlink_to("post-receive")
        (base / ".reconciler" / "replication.json").write_bytes(
            settings_json(
                server=name,
                peers=NAMES,
                mirror_users=[f"git@{n}" for n in NAMES],
                mode="quorum",
                timeout=10,
            )
        )
        repos[name] = repo
    for name, repo in repos.items():
        for peer in NAMES:
            if peer != name and peer in peers_with_remote:
                git(repo, "remote", "add", peer, str(repos[peer]))
    return repos


def env_for(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "RECONCILER_"))}
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
        **extra,
    )
    return env


def commit(repo: Path, parent: str | None = None, message: str = "c") -> str:
    tree = git(repo, "hash-object", "-t", "tree", "-w", "/dev/null")
    args = ["commit-tree", tree, "-m", message] + (["-p", parent] if parent else [])
    return git(repo, *args, env=env_for())


def test_a_write_to_the_branch_head_points_at_is_taken_by_every_server(tmp_path: Path) -> None:
    repos = make(tmp_path)
    first = commit(repos["a"])
    # HEAD points at refs/heads/master: the transaction names HEAD too.
    done = subprocess.run(
        ["git", "update-ref", "refs/heads/master", first],
        cwd=repos["a"],
        env=env_for(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "refs/heads/master: taken by 3 of 3 servers" in done.stderr
    for repo in repos.values():
        assert git(repo, "rev-parse", "refs/heads/master") == first


def test_refused_without_a_majority_and_put_back(tmp_path: Path) -> None:
    repos = make(tmp_path)
    shutil.rmtree(repos["c"])  # c is gone: a and b are a majority, b alone is not
    first = commit(repos["a"])
    done = subprocess.run(
        ["git", "update-ref", "refs/heads/x", first],
        cwd=repos["a"],
        env=env_for(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "refs/heads/x: taken by 2 of 3 servers" in done.stderr
    assert "c did not take refs/heads/x" in done.stderr
    # b's hook refuses a write when a is gone too: b puts nothing back (it moved nobody).
    shutil.rmtree(repos["a"])
    second = commit(repos["b"], first)
    refused = subprocess.run(
        ["git", "update-ref", "refs/heads/x", second, first],
        cwd=repos["b"],
        env=env_for(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "refs/heads/x refused: 1 of 3 servers could take it" in refused.stderr, refused.stderr
    assert git(repos["b"], "rev-parse", "refs/heads/x") == first


def test_repairs_and_peer_writes_do_not_vote(tmp_path: Path) -> None:
    repos = make(tmp_path, peers_with_remote=())  # no peer can be reached at all
    first = commit(repos["a"])
    for marker in ({"RECONCILER_REPLICA": "reconcile-apply"}, {"GITOSIS_USER": "git@b"}):
        done = subprocess.run(
            ["git", "update-ref", "refs/heads/repair", first],
            cwd=repos["a"],
            env=env_for(**marker),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "taken by" not in done.stderr
        git(repos["a"], "update-ref", "-d", "refs/heads/repair", env=env_for(**marker))
    # Refs outside refs/heads, tags and notes are not replicated and never vote.
    other = subprocess.run(
        ["git", "update-ref", "refs/other/x", first],
        cwd=repos["a"],
        env=env_for(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert other.returncode == 0, other.stderr
    refused = subprocess.run(
        ["git", "update-ref", "refs/heads/user", first],
        cwd=repos["a"],
        env=env_for(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0 and "refused: 1 of 3" in refused.stderr


def test_tags_and_deletions_vote_and_a_refused_deletion_changes_nothing(tmp_path: Path) -> None:
    repos = make(tmp_path)
    first = commit(repos["a"])
    for argv in (["refs/tags/v1", first], ["-d", "refs/tags/v1", first]):
        done = subprocess.run(
            ["git", "update-ref", *argv],
            cwd=repos["a"],
            env=env_for(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0 and "refs/tags/v1: taken by 3 of 3 servers" in done.stderr
    assert all(git(repo, "for-each-ref") == "" for repo in repos.values())
    git(repos["a"], "update-ref", "refs/tags/v2", first, env=env_for())
    shutil.rmtree(repos["c"])
    (repos["b"] / "refs" / "tags").mkdir(parents=True, exist_ok=True)
    (repos["b"] / "refs" / "tags" / "v2.lock").write_text("held")  # b is busy with v2
    refused = subprocess.run(
        ["git", "update-ref", "-d", "refs/tags/v2", first],
        cwd=repos["a"],
        env=env_for(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "refs/tags/v2 refused: 1 of 3 servers could take it" in refused.stderr
    assert "fetch and retry" in refused.stderr
    assert git(repos["a"], "rev-parse", "refs/tags/v2") == first
    assert git(repos["b"], "rev-parse", "refs/tags/v2") == first
