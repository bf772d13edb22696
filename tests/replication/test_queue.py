"""The queue files as the reconciler reads them."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from reconciler.replication.queue import (
    QueueProblem,
    queue_directory,
    read_queue,
    remove_entry,
    scan_queue,
    write_entry,
)
from reconciler.server.queue import QueueEntry

OLD = "1" * 40
NEW = "a" * 40


def entry(ref: str = "refs/heads/main", reason: str = "unreachable") -> QueueEntry:
    return QueueEntry(
        repository="tools/build-scripts",
        ref=ref,
        old=OLD,
        new=NEW,
        peer="mirror",
        reason=reason,
        transient=reason == "unreachable",
        time=1764089000.25,
        server="master",
        detail="",
    )


def test_an_entry_is_one_json_file_in_the_documented_format(tmp_path: Path) -> None:
    written = write_entry(tmp_path, entry())
    [path] = queue_directory(tmp_path).iterdir()
    assert path.name == written.name
    assert json.loads(path.read_text()) == {
        "format_version": 1,
        "repository": "tools/build-scripts",
        "ref": "refs/heads/main",
        "old": OLD,
        "new": NEW,
        "peer": "mirror",
        "reason": "unreachable",
        "transient": True,
        "time": 1764089000.25,
        "server": "master",
        "detail": "",
    }
    assert read_queue(tmp_path) == [written]


def test_an_empty_or_absent_queue_reads_as_empty(tmp_path: Path) -> None:
    assert read_queue(tmp_path) == []
    queue_directory(tmp_path).mkdir(parents=True)
    assert scan_queue(tmp_path) == ([], [])


def test_bad_files_are_reported_and_temporary_files_skipped(tmp_path: Path) -> None:
    good = write_entry(tmp_path, entry())
    directory = queue_directory(tmp_path)
    (directory / ".00000000000000000001-1-abc.json.1234.tmp").write_text("{")
    (directory / "00000000000000000002-1-bad.json").write_text("{not json")
    newer = json.loads((directory / good.name).read_text()) | {"format_version": 2}
    (directory / "00000000000000000003-1-new.json").write_text(json.dumps(newer))
    odd = json.loads((directory / good.name).read_text()) | {"reason": "bored"}
    (directory / "00000000000000000004-1-odd.json").write_text(json.dumps(odd))
    away = json.loads((directory / good.name).read_text()) | {"repository": "../etc"}
    (directory / "00000000000000000005-1-away.json").write_text(json.dumps(away))
    problems: list[QueueProblem] = []
    assert read_queue(tmp_path, problems.append) == [good]
    assert [p.path.name for p in problems] == [
        "00000000000000000002-1-bad.json",
        "00000000000000000003-1-new.json",
        "00000000000000000004-1-odd.json",
        "00000000000000000005-1-away.json",
    ]
    assert "format_version 2" in problems[1].message
    assert "bored" in str(problems[2])


def test_entries_read_in_time_order_and_removed(tmp_path: Path) -> None:
    first = write_entry(tmp_path, entry("refs/heads/a"))
    second = write_entry(tmp_path, entry("refs/heads/b"))
    assert [e.ref for e in read_queue(tmp_path)] == ["refs/heads/a", "refs/heads/b"]
    assert remove_entry(tmp_path, first)
    assert not remove_entry(tmp_path, first)
    assert remove_entry(tmp_path, second.name)
    assert read_queue(tmp_path) == []
    with pytest.raises(ValueError, match="not a queue entry"):
        remove_entry(tmp_path, "../replication.json")


def test_rewriting_keeps_the_name(tmp_path: Path) -> None:
    written = write_entry(tmp_path, entry())
    rewritten = write_entry(tmp_path, entry(reason="diverged"), name=written.name)
    assert rewritten.name == written.name
    assert [e.reason for e in read_queue(tmp_path)] == ["diverged"]


def test_concurrent_writers_never_collide(tmp_path: Path) -> None:
    def writer(i: int) -> None:
        for j in range(10):
            write_entry(tmp_path, entry(f"refs/heads/t{i}-{j}"))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    entries, problems = scan_queue(tmp_path)
    assert problems == []
    assert len({e.ref for e in entries}) == 200
    assert len(list(queue_directory(tmp_path).iterdir())) == 200


def test_a_drainer_also_takes_pending_entries_of_other_repositories(tmp_path: Path) -> None:
    """A hook of another repository that found the lock taken left its entries to the
    holder: the holder's drainer must not leave them behind (found by the benchmarks)."""
    from reconciler.server.queue import QueueEntry, write_entry
    from reconciler.server.replication import drain
    from tests.replication.conftest import build_cluster

    cluster = build_cluster(tmp_path, mode="async")
    base = cluster["master"].base
    stranded = write_entry(
        base,
        QueueEntry(
            repository="other",
            ref="refs/heads/main",
            old="0" * 40,
            new="1" * 40,
            peer="mirror",
            reason="pending",
            transient=True,
            time=1.0,
            server="master",
        ),
    )
    drain(base, "product", max_seconds=30)
    after = {entry.name: entry for entry in cluster["master"].queue()}
    # Tried (it cannot be delivered: no such repository), so no longer "pending".
    assert stranded.name not in after or after[stranded.name].reason != "pending"
