"""The gather program's facts: known hooks are not hashed again; repository settings."""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

from reconciler.facts import RepoSectionFacts, parse_server_facts
from reconciler.remote import gather

CURRENT = b"#!/usr/bin/env python3\n# reconciler replication hook\nprint('current')\n"


def make_repository(base: Path, name: str, hook: bytes | None) -> Path:
    gitdir = base / f"{name}.git"
    (gitdir / "objects").mkdir(parents=True)
    (gitdir / "refs" / "heads").mkdir(parents=True)
    (gitdir / "HEAD").write_text("ref: refs/heads/master\n")
    (gitdir / "config").write_text("[core]\n\tbare = true\n")
    if hook is not None:
        (gitdir / "hooks").mkdir()
        (gitdir / "hooks" / "post-receive").write_bytes(hook)
    return gitdir


def test_hook_digests_with_and_without_known_content(tmp_path: Path) -> None:
    same_length = CURRENT.replace(b"current", b"CURRENT")
    make_repository(tmp_path, "current", CURRENT)
    make_repository(tmp_path, "older", CURRENT + b"# older\n")
    make_repository(tmp_path, "same-length", same_length)
    make_repository(tmp_path, "none", None)
    known = gather.KnownContent(CURRENT)
    found = gather.walk_repositories(str(tmp_path), False, known)
    plain = gather.walk_repositories(str(tmp_path), False)
    expected = {
        "current": hashlib.sha256(CURRENT).hexdigest(),
        "older": hashlib.sha256(CURRENT + b"# older\n").hexdigest(),
        "same-length": hashlib.sha256(same_length).hexdigest(),
    }
    for name, digest in expected.items():
        assert found[name]["hook"]["sha256"] == digest
        assert plain[name]["hook"]["sha256"] == digest
        assert found[name]["hook"]["managed"] is True
    assert found["none"]["hook"] is None
    assert found == plain


def test_repository_settings_facts(tmp_path: Path, monkeypatch: Any) -> None:
    """export flags per repository, how gitosis finds each [repo] section, projects.list."""
    home = tmp_path
    base = home / "repositories"
    make_repository(base, "product", None)
    make_repository(base, "quiet", None)
    make_repository(base, "proj/sub", None)
    make_repository(base, "proj", None)
    (base / "product.git" / "git-daemon-export-ok").touch()
    (base / "product.git" / "description").write_text("The product\n")
    (base / "proj" / "description").write_text("in the directory\n")
    (home / "gitosis").mkdir()
    (home / "gitosis" / "projects.list").write_text("product.git Alice\n")
    request = {
        "repositories": "repositories",
        "repo_sections": ["product", "proj", "missing", "../etc", "/abs"],
        "descriptions": ["product", "proj", "missing"],
        "projects_list": "gitosis/projects.list",
    }
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(request)))
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    gather.main()
    facts = parse_server_facts("s", json.loads(out.getvalue()))
    assert facts.repositories["product"].export_ok is True
    assert facts.repositories["quiet"].export_ok is False
    assert facts.repo_sections == {
        "product": RepoSectionFacts(plain=False, description="The product\n"),
        "proj": RepoSectionFacts(plain=True, description="in the directory\n"),
        "missing": RepoSectionFacts(plain=False, description=None),
    }
    assert facts.projects_list == "product.git Alice\n"
