"""The gather program's facts: known hooks are not hashed again; repository settings."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import zlib
from pathlib import Path
from typing import Any

from reconciler.facts import RepoSectionFacts, parse_server_facts
from reconciler.server import gather, hooks, pushes, repositories

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
    known = hooks.KnownContent(CURRENT)
    found = repositories.walk_repositories(str(tmp_path), False, known)
    plain = repositories.walk_repositories(str(tmp_path), False)
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


def record(peer: str, when: float, seconds: float, result: str = "ok") -> str:
    return json.dumps({"peer": peer, "time": when, "seconds": seconds, "result": result})


def write_pushes(base: Path, lines: list[str]) -> Path:
    path = base / pushes.PUSHES_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_push_records_are_folded_into_totals_and_the_file_compacted(tmp_path: Path) -> None:
    now = 1_800_000_000.0
    old = now - pushes.PUSH_WINDOW_SECONDS - 10
    lines = [record("mirror", old + i, 1.0) for i in range(3)]
    lines += [record("mirror", now - 5, 0.25, "timeout"), record("third", now - 1, 0.5)]
    lines += ["not json", json.dumps({"peer": "../x", "time": now, "seconds": 1, "result": "ok"})]
    path = write_pushes(tmp_path, lines)

    first = pushes.read_pushes(str(tmp_path), now)
    assert first == {
        "mirror": {
            "count": 4,
            "sum": 3.25,
            "results": {"ok": 3, "timeout": 1},
            "recent": [0.25],
        },
        "third": {"count": 1, "sum": 0.5, "results": {"ok": 1}, "recent": [0.5]},
    }
    compacted = path.read_text().splitlines()
    assert len(compacted) == 3  # mirror's totals line, its recent record, third's record
    assert json.loads(compacted[0]) == {
        "peer": "mirror",
        "count": 3,
        "sum": 3.0,
        "results": {"ok": 3},
    }
    inode = path.stat().st_ino
    # Nothing left the window since: the same answer, and the file is not rewritten.
    assert pushes.read_pushes(str(tmp_path), now) == first
    assert path.stat().st_ino == inode
    # An hour later the recent records are folded too; the totals only grow.
    later = pushes.read_pushes(str(tmp_path), now + 2 * pushes.PUSH_WINDOW_SECONDS)
    assert later["mirror"] == {**first["mirror"], "recent": []}
    assert len(path.read_text().splitlines()) == 2
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_push_window_keeps_the_latest_records_per_peer(tmp_path: Path) -> None:
    now = 1_800_000_000.0
    count = pushes.PUSH_WINDOW_RECORDS + 20
    write_pushes(tmp_path, [record("mirror", now - count + i, float(i)) for i in range(count)])
    answer = pushes.read_pushes(str(tmp_path), now)["mirror"]
    assert answer["count"] == count
    assert answer["recent"] == [float(i) for i in range(20, count)]


def test_no_push_record_file_is_no_pushes(tmp_path: Path) -> None:
    assert pushes.read_pushes(str(tmp_path), 0.0) == {}
    assert not (tmp_path / pushes.PUSHES_PATH).exists()


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
    out = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out))
    gather.main()
    facts = parse_server_facts("s", json.loads(zlib.decompress(out.getvalue())))
    assert facts.repositories["product"].export_ok is True
    assert facts.repositories["quiet"].export_ok is False
    assert facts.repo_sections == {
        "product": RepoSectionFacts(plain=False, description="The product\n"),
        "proj": RepoSectionFacts(plain=True, description="in the directory\n"),
        "missing": RepoSectionFacts(plain=False, description=None),
    }
    assert facts.projects_list == "product.git Alice\n"


def test_a_config_parses_the_same_with_the_memo_of_earlier_lines() -> None:
    """The gather remembers what each config line says across repositories; the
    result is what each config alone parses to, whatever lines came before."""
    from reconciler.server.common import parse_git_config

    lines = [
        "[core]",
        "\tbare = true",
        '[remote "a b"]',
        '[Remote "x\\"y"]',
        "[branch.Main]",
        '\turl = "q\\"uoted" # comment',
        "\tx = v ; c",
        "\tflag",
        "# comment",
        "",
        "[sec] k = v",
        "[unclosed",
        "k=v",
        '\tK = "a\\tb\\n"',
        "\tfetch = +refs/*:refs/*",
    ]
    configs = ["\n".join(lines[(i * 7) % len(lines) :] + lines[: i % 5]) for i in range(40)]
    memo: dict[str, Any] = {}
    assert [parse_git_config(c, memo) for c in configs] == [parse_git_config(c) for c in configs]
    assert memo  # the lines were remembered, and reused from the second config on


def run_assembled_gather(home: Path, request: dict[str, Any]) -> dict[str, Any]:
    """The gather program as a server runs it: assembled into one blob and started
    by the transport's bootstrap, with none of this checkout on its path."""
    import subprocess

    from reconciler.server_library import program_blob
    from reconciler.transport import BOOTSTRAP

    blob = program_blob("gather")
    done = subprocess.run(
        [sys.executable, "-I", "-c", BOOTSTRAP, str(len(blob))],
        input=blob + json.dumps(request).encode(),
        capture_output=True,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        cwd="/",
        timeout=60,
        check=True,
    )
    answer: dict[str, Any] = json.loads(zlib.decompress(done.stdout))
    return answer


def test_the_assembled_program_calls_every_declared_fact_reader(tmp_path: Path) -> None:
    """No module names the readers a subject declares (``FACTS``): the assembler
    carries every such module, and the program finds them in its blob."""
    from reconciler.server import subjects
    from reconciler.server_library import library_files

    declared = set()
    for path, content in library_files().items():
        if path.startswith("reconciler/server/") and subjects.declares_facts(content.decode()):
            module = __import__(f"reconciler.server.{path.rsplit('/', 1)[1][:-3]}", fromlist=["_"])
            declared |= set(module.FACTS)
    assert "leftovers" in declared
    (tmp_path / "repositories").mkdir()
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / ".known_hosts.reconciler-tmp-999999999-x").write_text("")
    answer = run_assembled_gather(tmp_path, {"repositories": "repositories"})
    assert declared <= set(answer)
    # After the readers gather names itself, in the order they are found; then its time.
    assert list(answer)[-len(declared) - 1 :] == [
        key for key, _reader in subjects.fact_readers()
    ] + ["seconds"]
    assert answer["leftovers"] == [".ssh/.known_hosts.reconciler-tmp-999999999-x"]
