"""The replication hook's push records: ``<base>/.reconciler/pushes.jsonl``.

The hook appends one record per peer push (``record_push``); every gather folds what
left the window into per-peer totals (``read_pushes``). The format is described in
``reconciler/replication/pushes.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from reconciler.server.common import PUSHES_PATH, SERVER_NAME, atomic_write, read_text

# The file stays small between two gathers: past this size a push is not recorded.
PUSHES_MAX_BYTES = 256 << 10
PUSHES_READ_LIMIT = 4 << 20
PUSH_WINDOW_SECONDS = 3600.0
PUSH_WINDOW_RECORDS = 128
PUSH_RESULTS = (
    "ok",
    "unreachable",
    "timeout",
    "pending",
    "no remote",
    "diverged",
    "missing repository",
    "rejected",
)
# 10 ms apart: the other side holds the lock for milliseconds.
GATHER_LOCK_TRIES = 100
HOOK_LOCK_TRIES = 50


def _number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value >= 0


def parse_push_lines(text: str, now: float) -> tuple[dict[str, dict[str, Any]], bool]:
    """Per peer: folded totals, records still in the window, and whether the file
    should be rewritten (records left the window, or lines did not parse)."""
    peers: dict[str, dict[str, Any]] = {}
    dirty = False
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            dirty = True
            continue
        peer = item.get("peer") if isinstance(item, dict) else None
        if not isinstance(peer, str) or not SERVER_NAME.fullmatch(peer):
            dirty = True
            continue
        state = peers.setdefault(peer, {"count": 0, "sum": 0.0, "results": {}, "records": []})
        if "count" in item:  # a totals line of an earlier compaction
            results = item.get("results")
            if not _number(item["count"]) or not _number(item.get("sum")):
                dirty = True
                continue
            if state["count"]:
                dirty = True  # two totals lines: fold them into one
            state["count"] += int(item["count"])
            state["sum"] += float(item["sum"])
            for result, count in (results if isinstance(results, dict) else {}).items():
                if result in PUSH_RESULTS and _number(count):
                    state["results"][result] = state["results"].get(result, 0) + int(count)
            continue
        result = item.get("result")
        if (
            not _number(item.get("seconds"))
            or not _number(item.get("time"))
            or result not in PUSH_RESULTS
        ):
            dirty = True
            continue
        state["records"].append(item)
    for state in peers.values():
        records = sorted(state["records"], key=lambda r: r["time"])
        recent = [r for r in records if r["time"] >= now - PUSH_WINDOW_SECONDS]
        recent = recent[-PUSH_WINDOW_RECORDS:]
        kept = {id(r) for r in recent}
        for record in records:
            if id(record) not in kept:
                dirty = True
                state["count"] += 1
                state["sum"] += float(record["seconds"])
                results = state["results"]
                results[record["result"]] = results.get(record["result"], 0) + 1
        state["records"] = recent
    return peers, dirty


def compacted_push_lines(peers: dict[str, dict[str, Any]]) -> str:
    lines = []
    for peer in sorted(peers):
        state = peers[peer]
        if state["count"]:
            total = {
                "peer": peer,
                "count": state["count"],
                "sum": round(state["sum"], 4),
                "results": state["results"],
            }
            lines.append(json.dumps(total, sort_keys=True))
        lines += [json.dumps(r, sort_keys=True) for r in state["records"]]
    return "".join(line + "\n" for line in lines)


def read_pushes(base: str, now: float) -> dict[str, dict[str, Any]]:
    """The hook's push records per peer: cumulative count, sum and results, and the
    durations of the pushes in the window. Compacts the file when records left the
    window (under flock on it: the hook appends under the same lock)."""
    path = os.path.join(base, PUSHES_PATH)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        try:
            locked = _lock_briefly(fd, GATHER_LOCK_TRIES)
        except OSError:
            locked = False
        text = read_text(path, PUSHES_READ_LIMIT) or ""
        peers, dirty = parse_push_lines(text, now)
        if dirty and locked:
            with contextlib.suppress(OSError):
                atomic_write(path, compacted_push_lines(peers).encode("utf-8"))
    finally:
        os.close(fd)  # releases the lock, after the rename
    answer = {}
    for peer, state in peers.items():
        results = dict(state["results"])
        for record in state["records"]:
            results[record["result"]] = results.get(record["result"], 0) + 1
        answer[peer] = {
            "count": state["count"] + len(state["records"]),
            "sum": round(state["sum"] + sum(float(r["seconds"]) for r in state["records"]), 4),
            "results": results,
            "recent": [float(r["seconds"]) for r in state["records"]],
        }
    return answer


def record_push(base: Path, peer: str, seconds: float, result: str) -> None:
    """Append one push's duration and outcome to ``PUSHES_PATH``; best effort.

    The gather program folds old lines into totals by renaming a compacted file
    over this one while holding ``flock`` on it, so the line is written under the
    same lock, into the file that is at the path once the lock is held.
    """
    line = json.dumps(
        {
            "peer": peer,
            "time": round(time.time(), 3),
            "seconds": round(seconds, 4),
            "result": result,
        },
        sort_keys=True,
    )
    path = base / PUSHES_PATH
    with contextlib.suppress(OSError):
        for _ in range(3):
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                if not _lock_briefly(fd, HOOK_LOCK_TRIES):
                    return
                if os.fstat(fd).st_ino != os.stat(path).st_ino:
                    continue  # compacted meanwhile: write into the new file
                if os.fstat(fd).st_size < PUSHES_MAX_BYTES:
                    os.write(fd, (line + "\n").encode("utf-8"))
                return
            finally:
                os.close(fd)


def _lock_briefly(fd: int, tries: int) -> bool:
    for _ in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            time.sleep(0.01)
    return False


# --- running git, bounded ----------------------------------------------------------
