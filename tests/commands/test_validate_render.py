"""`reconcile validate` and `reconcile render` as a person runs them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.desired import load
from reconciler.desired.render import render_admin_files

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def admin(tmp_path: Path) -> Path:
    shutil.copytree(PROJECT / "cluster.d", tmp_path / "cluster.d")
    return tmp_path


def test_validate_wants_rendered_files(admin: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-C", str(admin)]) == 1
    err = capsys.readouterr().err
    assert f"{admin / 'gitosis.conf'}: this rendered file is missing" in err
    assert "reconcile render" in err


def test_render_then_validate(admin: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "-C", str(admin)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {admin / 'gitosis.conf'}" in out
    expected = render_admin_files(load(admin))
    for path, content in expected.items():
        assert (admin / path).read_text(encoding="utf-8") == content

    assert main(["render", "-C", str(admin)]) == 0
    assert "already up to date" in capsys.readouterr().out

    assert main(["validate", "-C", str(admin)]) == 0
    assert "is valid (3 servers, 2 repositories, 4 groups, 4 users)" in capsys.readouterr().out

    (admin / "keydir" / "bob@laptop.pub").write_text("ssh-ed25519 AAAA tampered\n")
    assert main(["validate", "-C", str(admin)]) == 1
    err = capsys.readouterr().err
    assert "keydir/bob@laptop.pub" in err


def test_invalid_render_changes_nothing(admin: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (admin / "cluster.d" / "50-bad.yaml").write_text("servers:\n  x: {url: 'gopher://x'}\n")
    assert main(["render", "-C", str(admin)]) == 1
    err = capsys.readouterr().err
    assert "50-bad.yaml:2:12:" in err
    assert "1 problem found" in err
    assert not (admin / "gitosis.conf").exists()


def test_commands_start_without_heavy_imports() -> None:
    code = (
        "import sys, reconciler.cli, reconciler.commands.validate, "
        "reconciler.commands.render, reconciler.commands.import_, "
        "reconciler.commands.install_hooks\n"
        "print(sorted(m for m in ('pydantic', 'ruamel.yaml', 'git', 'paramiko') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
