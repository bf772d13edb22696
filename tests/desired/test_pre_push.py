"""The pre-push hook, with a real bare repository and a real ``git push``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.desired.pre_push import MARKER

PROJECT = Path(__file__).resolve().parents[2]


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    return subprocess.run(
        ["git", "-c", "init.defaultBranch=master", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def remote_head(remote: Path) -> str:
    return git(remote, "rev-parse", "refs/heads/master").stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> tuple[Path, Path]:
    remote = tmp_path / "gitosis-admin.git"
    git(tmp_path, "init", "--bare", "--quiet", str(remote))
    admin = tmp_path / "admin"
    git(tmp_path, "clone", "--quiet", str(remote), str(admin))
    shutil.copytree(PROJECT / "cluster.d", admin / "cluster.d")
    assert main(["render", "-C", str(admin)]) == 0
    git(admin, "add", "-A")
    git(admin, "commit", "--quiet", "-m", "valid cluster.d")
    assert main(["install-hooks", "-C", str(admin)]) == 0
    return admin, remote


def test_valid_push_passes_and_invalid_push_is_blocked(checkout: tuple[Path, Path]) -> None:
    admin, remote = checkout
    hook = admin / ".git" / "hooks" / "pre-push"
    assert MARKER in hook.read_text()
    assert os.access(hook, os.X_OK)

    pushed = git(admin, "push", "origin", "HEAD:refs/heads/master", check=False)
    assert pushed.returncode == 0, pushed.stderr
    good = remote_head(remote)
    assert good == git(admin, "rev-parse", "HEAD").stdout.strip()

    groups = admin / "cluster.d" / "30-groups.yaml"
    groups.write_text(groups.read_text().replace("[carol@laptop]", "[mallory@nowhere]"))
    git(admin, "commit", "--quiet", "-am", "an unknown member")
    # Fix the working tree without committing: the hook checks what is pushed.
    git(admin, "checkout", "HEAD~1", "--", "cluster.d")

    blocked = git(admin, "push", "origin", "HEAD:refs/heads/master", check=False)
    assert blocked.returncode != 0
    assert "cluster.d/30-groups.yaml:" in blocked.stderr
    assert "member 'mallory@nowhere' of group 'build' is not a known user" in blocked.stderr
    assert "Traceback" not in blocked.stderr
    assert remote_head(remote) == good


def test_stale_rendering_is_blocked(checkout: tuple[Path, Path]) -> None:
    admin, remote = checkout
    repositories = admin / "cluster.d" / "20-repositories.yaml"
    repositories.write_text(repositories.read_text() + "  website: {}\n")
    git(admin, "commit", "--quiet", "-am", "forgot to render")

    blocked = git(admin, "push", "origin", "HEAD:refs/heads/master", check=False)
    assert blocked.returncode != 0
    assert "gitosis.conf" in blocked.stderr and "reconcile render" in blocked.stderr
    assert git(remote, "rev-parse", "--verify", "-q", "refs/heads/master", check=False).stdout == ""

    assert main(["render", "-C", str(admin)]) == 0
    git(admin, "commit", "--quiet", "-am", "rendered")
    assert git(admin, "push", "origin", "HEAD:refs/heads/master", check=False).returncode == 0


def test_install_is_idempotent_and_keeps_foreign_hooks(
    checkout: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    admin, _remote = checkout
    capsys.readouterr()
    assert main(["install-hooks", "-C", str(admin)]) == 0
    assert "already up to date" in capsys.readouterr().out

    hook = admin / ".git" / "hooks" / "pre-push"
    hook.write_text("#!/bin/sh\necho mine\n")
    assert main(["install-hooks", "-C", str(admin)]) == 1
    err = capsys.readouterr().err
    assert "did not write" in err and "Traceback" not in err
    assert hook.read_text() == "#!/bin/sh\necho mine\n"


def test_install_outside_a_checkout_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert main(["install-hooks", "-C", str(tmp_path)]) == 1
    assert "not a git checkout" in capsys.readouterr().err
