"""A repository with no peer remotes yet (gitosis made it on its first push, before an
apply added them) is replicated to the peers' URLs from the settings, in every mode."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from reconciler.replication import settings_json
from reconciler.server.common import PROC_RECEIVE_REFS
from reconciler.testing.library import install_server_library

NAMES = ("a", "b", "c")
WAIT_SECONDS = 30.0


def run(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=60, check=False
    )


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "RECONCILER_"))}
    env.pop("GITOSIS_USER", None)
    env.update(
        HOME=str(home),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
    )
    return env


def servers(tmp: Path, mode: str, *, peer_urls: bool = True) -> dict[str, Path]:
    """Three servers, each with the repository ``fresh`` holding the hook (as a
    template gives it) but no remote; the settings as apply writes them."""
    repos = {}
    for name in NAMES:
        base = tmp / name / "repositories"
        (base / ".reconciler").mkdir(parents=True)
        repo = base / "fresh.git"
        subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True, timeout=60)
        hook = repo / "hooks" / "post-receive"
        hook.write_bytes(install_server_library(tmp / name))
        hook.chmod(0o755)
        if mode == "quorum":
            (repo / "hooks" / "proc-receive").symlink_to("post-receive")
            for prefix in PROC_RECEIVE_REFS:
                add = ["git", "--git-dir", str(repo), "config", "--add"]
                subprocess.run(
                    [*add, "receive.procReceiveRefs", prefix],
                    check=True,
                    timeout=60,
                )
        data = json.loads(
            settings_json(
                server=name,
                peers=NAMES,
                mirror_users=[f"git@{n}" for n in NAMES],
                mode=mode,
                timeout=10,
            )
        )
        if peer_urls:
            # Written as data, not through settings_json: the test must be able to
            # fail on a hook that ignores the field.
            data["peer_urls"] = {p: str(tmp / p / "repositories") for p in NAMES if p != name}
        (base / ".reconciler" / "replication.json").write_text(json.dumps(data))
        repos[name] = repo
    return repos


def value(repo: Path, ref: str, env: dict[str, str]) -> str:
    return run(repo, "rev-parse", "--verify", "--quiet", ref, env=env).stdout.strip()


def push_one_commit(tmp: Path, target: Path, env: dict[str, str]) -> tuple[str, str]:
    work = tmp / "work"
    assert run(tmp, "init", "-q", "-b", "main", str(work), env=env).returncode == 0
    (work / "f").write_text("first\n")
    run(work, "add", "f", env=env)
    run(work, "commit", "-q", "-m", "first", env=env)
    sha = value(work, "HEAD", env)
    pushed = run(work, "push", str(target), "HEAD:refs/heads/main", env=env)
    assert pushed.returncode == 0, pushed.stderr
    return sha, pushed.stderr


@pytest.mark.parametrize("mode", ["sync", "async", "quorum"])
def test_first_push_reaches_peers_the_repository_has_no_remote_for(
    tmp_path: Path, mode: str
) -> None:
    repos = servers(tmp_path, mode)
    env = environment(tmp_path / "home")
    sha, said = push_one_commit(tmp_path, repos["a"], env)
    assert "no remote" not in said, said
    if mode == "sync":
        assert "remote: replicated to b" in said and "remote: replicated to c" in said, said
    if mode == "quorum":
        assert "refs/heads/main: taken by 3 of 3 servers" in said, said
    deadline = time.monotonic() + (WAIT_SECONDS if mode == "async" else 0)
    while True:
        held = [n for n in NAMES if value(repos[n], "refs/heads/main", env) == sha]
        queued = [
            p.name
            for n in NAMES
            for p in (tmp_path / n / "repositories/.reconciler/queue").glob("*.json")
        ]
        if (held == list(NAMES) and not queued) or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    assert held == list(NAMES), said
    assert queued == [], said
    # The URLs were given to git for the hook's own commands only, never written.
    for repo in repos.values():
        assert run(repo, "config", "--get-regexp", r"^remote\.", env=env).stdout == ""


def test_without_peer_urls_the_update_is_queued_as_before(tmp_path: Path) -> None:
    repos = servers(tmp_path, "sync", peer_urls=False)
    env = environment(tmp_path / "home")
    _sha, said = push_one_commit(tmp_path, repos["a"], env)
    assert "remote: b has no remote configured: queued" in said, said
    assert value(repos["b"], "refs/heads/main", env) == ""
