"""The durable replication queue: its format, its reader and writer, the drain op.

Where: ``<base>/.reconciler/queue/`` on each server (``QUEUE_PATH``). One JSON file
per (peer, ref update) the peer has not taken, or one batch file for the updates of
one push (``{"format_version": 1, "entries": [entry + "index", ...]}``), named
``<time_ns, 20 digits>-<pid>-<12 hex>.json``, so that names sort by time and
concurrent hooks never collide; written whole (``common.atomic_write``). An entry of
a batch is named ``FILE#INDEX``: its index never changes when the batch is
rewritten without some of its entries, so a name read by a gather still means the
same entry when apply drains it. The format and the drain protocol are described in
``reconciler/replication/queue.py``. Written by the hook and its drainer; read by
gather (``gather_queue``); delivered entries removed by the drain op
(``reconciler.server.queue_ops``, apart so that the hooks never import the op catalogue).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reconciler.server.common import (
    FORMAT_VERSION,
    OBJECT_ID,
    QUEUE_PATH,
    SERVER_NAME,
    atomic_write,
    fsync_dir,
    read_text,
)

TRANSIENT_REASONS = ("unreachable", "timeout", "pending", "no remote")
# "denied": the peer's gitosis refused this server's key access to the repository
# (its own sentence is the detail); trying again changes nothing until the access
# rules or the keys are fixed.
PERMANENT_REASONS = ("diverged", "missing repository", "rejected", "denied")
REASONS = TRANSIENT_REASONS + PERMANENT_REASONS
MAX_QUEUE = 100000  # files a gather reads
MAX_ENTRY_BYTES = 1 << 16
# A batch holds the updates of one push (thousands of tags): one file, two fsyncs.
MAX_BATCH_BYTES = 1 << 26
BATCH_MARK = "#"  # FILE#INDEX names an entry of a batch file


def is_zero(object_id: str) -> bool:
    return object_id.strip("0") == ""


@dataclass(frozen=True)
class RefUpdate:
    old: str
    new: str
    ref: str

    @property
    def lease(self) -> str:
        # An empty lease means "the ref must not exist yet".
        return f"--force-with-lease={self.ref}:{'' if is_zero(self.old) else self.old}"

    @property
    def refspec(self) -> str:
        return f":{self.ref}" if is_zero(self.new) else f"{self.new}:{self.ref}"


@dataclass(frozen=True)
class QueueEntry:
    """One ref update one peer has not taken yet; one file in the queue."""

    repository: str
    ref: str
    old: str
    new: str
    peer: str
    reason: str
    transient: bool
    time: float
    server: str
    detail: str = ""
    # The file the entry was read from or written to; not part of the JSON.
    name: str = field(default="", compare=False)

    @property
    def update(self) -> RefUpdate:
        return RefUpdate(old=self.old, new=self.new, ref=self.ref)

    def to_json(self) -> dict[str, object]:
        return {
            "format_version": FORMAT_VERSION,
            "repository": self.repository,
            "ref": self.ref,
            "old": self.old,
            "new": self.new,
            "peer": self.peer,
            "reason": self.reason,
            "transient": self.transient,
            "time": self.time,
            "server": self.server,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, data: object, name: str = "") -> QueueEntry:
        """Parse one queue file's JSON; ValueError names what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported format_version {data.get('format_version')!r}")
        strings = {}
        for key in ("repository", "ref", "old", "new", "peer", "reason", "server"):
            value = data.get(key)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{key!r} must be a non-empty string")
            strings[key] = value
        for key in ("old", "new"):
            if not OBJECT_ID.fullmatch(strings[key]):
                raise ValueError(f"{key!r} is not an object id: {strings[key]!r}")
        for key in ("peer", "server"):
            if not SERVER_NAME.fullmatch(strings[key]):
                raise ValueError(f"{key!r} is not a server name: {strings[key]!r}")
        parts = strings["repository"].split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"'repository' is not a repository path: {strings['repository']!r}")
        if not strings["ref"].startswith("refs/"):
            raise ValueError(f"'ref' is not a ref name: {strings['ref']!r}")
        if strings["reason"] not in REASONS:
            raise ValueError(f"unknown reason {strings['reason']!r}")
        transient = data.get("transient")
        when = data.get("time")
        detail = data.get("detail", "")
        if not isinstance(transient, bool):
            raise ValueError("'transient' must be true or false")
        if isinstance(when, bool) or not isinstance(when, (int, float)):
            raise ValueError("'time' must be a number")
        if not isinstance(detail, str):
            raise ValueError("'detail' must be a string")
        return cls(
            repository=strings["repository"],
            ref=strings["ref"],
            old=strings["old"],
            new=strings["new"],
            peer=strings["peer"],
            reason=strings["reason"],
            transient=transient,
            time=float(when),
            server=strings["server"],
            detail=detail,
            name=name,
        )


def new_entry_name() -> str:
    # Sorts by time; pid and randomness keep concurrent hooks apart.
    return f"{time.time_ns():020d}-{os.getpid()}-{os.urandom(6).hex()}.json"


def is_entry_name(name: str) -> bool:
    return name.endswith(".json") and not name.startswith(".")


def split_name(name: str) -> tuple[str, int | None]:
    """(file, index in the batch) of an entry's name; index None for a file of its own.

    ValueError for anything that is not a queue entry's name."""
    file, mark, index = name.partition(BATCH_MARK)
    if not is_entry_name(file) or "/" in file or (mark and not index.isdigit()):
        raise ValueError(f"not a queue entry name: {name!r}")
    return file, int(index) if mark else None


def write_entry(base: Path, entry: QueueEntry, name: str = "") -> QueueEntry:
    """Write ``entry`` atomically (a new file, or over ``name``); returns it named.

    ``name`` may be an entry of a batch: that entry alone is replaced."""
    if name and split_name(name)[1] is not None:
        update_entries(base, {name: entry})
        return replace(entry, name=name)
    directory = base / QUEUE_PATH
    directory.mkdir(parents=True, exist_ok=True)
    name = name or new_entry_name()
    data = (json.dumps(entry.to_json(), sort_keys=True) + "\n").encode("utf-8")
    atomic_write(directory / name, data, 0o644)
    return replace(entry, name=name)


def write_entries(base: Path, entries: Sequence[QueueEntry]) -> list[QueueEntry]:
    """Write ``entries`` as one file (a batch when there are several); returns them
    named. Thousands of updates cost one write and two fsyncs, not two each."""
    if len(entries) <= 1:
        return [write_entry(base, entry) for entry in entries]
    directory = base / QUEUE_PATH
    directory.mkdir(parents=True, exist_ok=True)
    name = new_entry_name()
    items = [{**entry.to_json(), "index": i} for i, entry in enumerate(entries)]
    _write_batch(directory / name, items)
    return [replace(entry, name=f"{name}{BATCH_MARK}{i}") for i, entry in enumerate(entries)]


def _write_batch(path: Path, items: Sequence[Mapping[str, object]]) -> None:
    data = {"format_version": FORMAT_VERSION, "entries": list(items)}
    atomic_write(path, (json.dumps(data, sort_keys=True) + "\n").encode("utf-8"), 0o644)


def _parse_file(name: str, text: str) -> tuple[list[QueueEntry], list[str]]:
    """The entries of one queue file, and what is wrong with the parts that are not."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        return [], [str(exc)]
    if not (isinstance(data, dict) and "entries" in data):
        try:
            return [QueueEntry.from_json(data, name=name)], []
        except ValueError as exc:
            return [], [str(exc)]
    if data.get("format_version") != FORMAT_VERSION or not isinstance(data["entries"], list):
        return [], [f"unsupported batch (format_version {data.get('format_version')!r})"]
    entries = []
    problems = []
    for item in data["entries"]:
        index = item.get("index") if isinstance(item, dict) else None
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            problems.append("a batch entry without an index")
            continue
        try:
            entries.append(QueueEntry.from_json(item, name=f"{name}{BATCH_MARK}{index}"))
        except ValueError as exc:
            problems.append(f"entry {index}: {exc}")
    return entries, problems


def read_entries(
    base: Path | str, limit: int | None = None
) -> tuple[list[QueueEntry], list[tuple[str, str]]]:
    """Every entry in time order (the entries of the first ``limit`` files), and (file
    name, problem) for files (or parts of batches) that do not parse."""
    directory = os.path.join(os.fspath(base), QUEUE_PATH)
    try:
        names = sorted(n for n in os.listdir(directory) if is_entry_name(n))
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [(".", str(exc))]
    entries = []
    problems = []
    for name in names[:limit]:
        path = os.path.join(directory, name)
        text = read_text(path, MAX_BATCH_BYTES)
        if text is None:
            if os.path.lexists(path):
                problems.append((name, "cannot be read"))
            continue  # drained meanwhile
        found, wrong = _parse_file(name, text)
        entries += found
        problems += [(name, problem) for problem in wrong[:1]]
    return entries, problems


def update_entries(base: Path, changes: Mapping[str, QueueEntry | None], sync: bool = True) -> int:
    """Replace (an entry) or delete (None) the named entries, one write per file.

    An entry of a batch not named here stays as it is on disk (so does a part of a
    batch that does not parse); a batch left empty is removed. Returns how many
    named entries were there to delete or replace."""
    with _REWRITING:
        return _update_entries(base, changes, sync)


# A batch is rewritten by reading it and writing it back: threads of one process
# (the drainer's workers) take turns. Another process rewriting the same batch at
# once can only bring back an entry it had not seen delivered (a later drain finds
# it "up to date"); nobody removes an entry it did not deliver.
_REWRITING = threading.Lock()


def _update_entries(base: Path, changes: Mapping[str, QueueEntry | None], sync: bool) -> int:
    directory = base / QUEUE_PATH
    by_file: dict[str, dict[int | None, QueueEntry | None]] = {}
    for name, entry in changes.items():
        file, index = split_name(name)
        by_file.setdefault(file, {})[index] = entry
    found = 0
    removed = False
    for file, wanted in by_file.items():
        path = directory / file
        if None in wanted:  # a file of its own
            entry = wanted[None]
            if entry is None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    found += 1
                    removed = True
            else:
                write_entry(base, entry, name=file)
                found += 1
            continue
        text = read_text(str(path), MAX_BATCH_BYTES)
        if text is None:
            continue  # gone: everything in it was delivered
        try:
            data = json.loads(text)
        except ValueError:
            continue  # not ours to repair: gather reports it
        if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
            continue
        kept = []
        for item in data["entries"]:
            index = item.get("index") if isinstance(item, dict) else None
            if index not in wanted:
                kept.append(item)
                continue
            found += 1
            change = wanted[index]
            if change is not None:
                kept.append({**change.to_json(), "index": index})
        if kept:
            _write_batch(path, kept)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed = True
    if removed and sync:
        fsync_dir(str(directory))
    return found


def delete_entry(base: Path, name: str, sync: bool = True) -> bool:
    """Remove one queue entry; False if it was already gone.

    ``sync=False`` leaves the directory sync to the caller, once for many.
    """
    split_name(name)
    return update_entries(base, {name: None}, sync=sync) > 0


# --- gather and execute ----------------------------------------------------------------


def gather_queue(base: str) -> dict[str, Any]:
    """The queue's valid entries (each with its ``file``) and the names of the files
    that are not entries."""
    entries, problems = read_entries(base, MAX_QUEUE)
    return {
        "queue": [{**entry.to_json(), "file": entry.name} for entry in entries],
        "queue_errors": [name for name, _problem in problems],
    }
