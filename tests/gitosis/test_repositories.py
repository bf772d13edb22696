"""Descriptions, projects.list and git-daemon-export-ok from [repo] sections."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.gitosis.config import parse_config
from reconciler.gitosis.repositories import (
    project_list,
    refresh_generated_files,
    set_export_ok,
)

CONF = """\
[gitosis]
daemon = no

[repo product]
description = The product
owner = Alice Smith
gitweb = yes
daemon = yes

[repo tools/build]
gitweb = yes

[repo missing]
description = nowhere
gitweb = yes

[repo hidden]
description = Not listed
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    for repo in ("product.git", "tools/build.git", "hidden.git", "other.git"):
        (tmp_path / "repositories" / repo).mkdir(parents=True)
    (tmp_path / "gitosis").mkdir()
    return tmp_path


def test_refresh(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    (home / "repositories" / "other.git" / "git-daemon-export-ok").touch()
    refresh_generated_files(parse_config(CONF))
    repos = home / "repositories"
    assert (repos / "product.git" / "description").read_text() == "The product\n"
    assert (repos / "hidden.git" / "description").read_text() == "Not listed\n"
    assert not (repos / "tools" / "build.git" / "description").exists()
    assert (home / "gitosis" / "projects.list").read_text() == (
        "product.git Alice+Smith\ntools%2Fbuild.git\nmissing\n"
    )
    assert (repos / "product.git" / "git-daemon-export-ok").exists()
    assert not (repos / "other.git" / "git-daemon-export-ok").exists()
    assert "Cannot find 'missing' in" in caplog.text


def test_global_switches(home: Path) -> None:
    config = parse_config(
        "[gitosis]\ngitweb = yes\ndaemon = yes\n[repo x]\ngitweb = no\n[repo y]\n"
    )
    (home / "repositories" / "x.git").mkdir()
    (home / "repositories" / "y.git").mkdir()
    assert project_list(config) == "y.git\n"
    set_export_ok(config)
    flags = sorted(
        str(p.parent.relative_to(home / "repositories"))
        for p in (home / "repositories").rglob("git-daemon-export-ok")
    )
    assert flags == ["hidden.git", "other.git", "product.git", "tools/build.git", "x.git", "y.git"]


def test_repositories_base_may_be_missing(home: Path) -> None:
    set_export_ok(parse_config("[gitosis]\nrepositories = nowhere\n"))
