"""The execute program: repositories created a few at a time, remotes set with few git calls."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.server import common, execute

Action = list[dict[str, object]]


def run_program(
    monkeypatch: pytest.MonkeyPatch, home: Path, actions: list[Action]
) -> list[dict[str, object]]:
    monkeypatch.setattr(common, "HOME", str(home))
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


def test_keep_file_copies_a_foreign_hook_beside_itself_with_its_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    hooks = tmp_path / "repositories" / "a.git" / "hooks"
    hooks.mkdir(parents=True)
    (hooks / "post-receive").write_text("#!/bin/sh\necho theirs\n")
    (hooks / "post-receive").chmod(0o750)
    digest = hashlib.sha256(b"#!/bin/sh\necho theirs\n").hexdigest()
    keep = {
        "op": "keep_file",
        "path": "repositories/a.git/hooks/post-receive",
        "to": "repositories/a.git/hooks/post-receive.foreign-20250102T030405",
        "expect_sha256": digest,
    }
    results = run_program(
        monkeypatch,
        tmp_path,
        [
            [keep],
            [keep],  # a rerun finds its copy and leaves it
            [{**keep, "expect_sha256": "0" * 64}],
            [{**keep, "to": "repositories/a.git/post-receive.kept"}],
        ],
    )
    kept = hooks / "post-receive.foreign-20250102T030405"
    assert kept.read_text() == "#!/bin/sh\necho theirs\n"
    assert kept.stat().st_mode & 0o777 == 0o750
    assert [r["ok"] for r in results] == [True, True, False, False]
    assert "changed since the plan was made" in str(results[2]["error"])
    assert "not beside it" in str(results[3]["error"])
    (hooks / "post-receive").write_text("#!/bin/sh\necho changed\n")
    results = run_program(
        monkeypatch, tmp_path, [[{k: v for k, v in keep.items() if k != "expect_sha256"}]]
    )
    assert results[0]["ok"] is False and "exists already" in str(results[0]["error"])
    assert kept.read_text() == "#!/bin/sh\necho theirs\n"


def test_keep_file_keeps_a_symlinked_hook_as_a_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooks = tmp_path / "repositories" / "a.git" / "hooks"
    hooks.mkdir(parents=True)
    (hooks / "post-receive").symlink_to("../../shared-hook")
    keep = {
        "op": "keep_file",
        "path": "repositories/a.git/hooks/post-receive",
        "to": "repositories/a.git/hooks/post-receive.foreign-20250102T030405",
    }
    assert run_program(monkeypatch, tmp_path, [[keep]])[0]["ok"] is True
    kept = hooks / "post-receive.foreign-20250102T030405"
    assert kept.is_symlink() and str(kept.readlink()) == "../../shared-hook"
