"""The gather program's hook facts: known content is not hashed again, anything else is."""

from __future__ import annotations

import hashlib
from pathlib import Path

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
