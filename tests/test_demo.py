"""The demo runs the whole job on local servers in a scratch area, never in the project."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler import demo

PROJECT = Path(__file__).resolve().parents[1]


def test_demo_applies_replicates_and_converges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(PROJECT / "cluster.d", tmp_path / "cluster.d")
    monkeypatch.setattr(demo, "project_root", lambda: tmp_path)
    monkeypatch.chdir(tmp_path)

    assert demo.main() == 0
    out = capsys.readouterr().out
    servers = tmp_path / ".cluster" / "servers"
    heads = {
        name: subprocess.run(
            [
                "git",
                "--git-dir",
                str(servers / name / "repositories/product.git"),
                "rev-parse",
                "main",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for name in ("alpha", "beta", "gamma")
    }
    assert len(set(heads.values())) == 1
    # The demo's cluster.d is in quorum mode (the default for three servers): the push
    # is acknowledged once every server holds it.
    assert "refs/heads/main: taken by 3 of 3 servers" in out
    assert "No changes" in out
    # Nothing was written into the project itself.
    assert not (tmp_path / "gitosis.conf").exists()
    assert not (tmp_path / "keydir").exists()

    # A second run starts afresh and converges again.
    assert demo.main() == 0
