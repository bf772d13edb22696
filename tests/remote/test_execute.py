"""The execute program: repositories created a few at a time, remotes set with few git calls."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.remote import execute

Action = list[dict[str, object]]


def run_program(
    monkeypatch: pytest.MonkeyPatch, home: Path, actions: list[Action]
) -> list[dict[str, object]]:
    monkeypatch.setattr(execute, "HOME", str(home))
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"actions": actions})))
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    execute.main()
    return list(json.loads(out.getvalue())["results"])


def config(gitdir: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(gitdir), "config", *args],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def test_many_repositories_are_created_and_results_keep_their_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"group/r{i}" for i in range(9)]
    actions = [[{"op": "init_bare", "path": f"repositories/{n}.git"}] for n in names]
    actions.insert(4, [{"op": "init_bare", "path": "../outside.git"}])
    results = run_program(monkeypatch, tmp_path, actions)
    assert [r["ok"] for r in results] == [True] * 4 + [False] + [True] * 5
    assert "refusing path" in results[4]["error"]
    for name in names:
        assert (tmp_path / "repositories" / f"{name}.git" / "HEAD").is_file()


def test_set_remote_normalises_a_remote_and_leaves_a_clean_one_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gitdir = tmp_path / "repositories" / "a.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(gitdir)], check=True)
    for key, value in (
        ("remote.peer.url", "ssh://old/a.git"),
        ("remote.peer.fetch", "+refs/*:refs/*"),
        ("remote.peer.mirror", "true"),
    ):
        config(gitdir, key, value)
    op = {
        "op": "set_remote",
        "repo": "repositories/a.git",
        "name": "peer",
        "url": "ssh://new/a.git",
    }
    assert run_program(monkeypatch, tmp_path, [[op]]) == [{"ok": True, "error": ""}]
    assert config(gitdir, "--get-regexp", "^remote[.]peer[.]").splitlines() == [
        "remote.peer.url ssh://new/a.git",
        "remote.peer.reconcilermanaged true",
    ]
    before = (gitdir / "config").stat().st_mtime_ns
    assert run_program(monkeypatch, tmp_path, [[op]]) == [{"ok": True, "error": ""}]
    assert (gitdir / "config").stat().st_mtime_ns == before  # nothing to change: not written
