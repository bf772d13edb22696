"""The benchmarks at tiny size, so they cannot rot: every row of issue 6 is produced.

Timings are not asserted here (a test machine is noisy); the benchmark itself
prints medians and ratios. What is asserted is that each row was measured, with a
floor where it has one, and that the run left no server user or sshd behind.
"""

from __future__ import annotations

import json
import pwd
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.testing.cluster import USER_COMMENT_TAG, unavailable_reason

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ROWS = ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9", "P10", "P11", "P12")


def users_of(pid: int) -> list[str]:
    """Server users a process created (the cluster tags them with its pid)."""
    tag = f"{USER_COMMENT_TAG} pid={pid}"
    return [entry.pw_name for entry in pwd.getpwall() if entry.pw_gecos == tag]


def test_tiny_benchmark_measures_every_row(tmp_path: Path) -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    output = tmp_path / "rows.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", "--size", "tiny", "--json", str(output)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        # SIGTERM: the benchmark's finally blocks stop its clusters.
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
        raise AssertionError("the tiny benchmark took more than 300 s") from None
    assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
    rows = json.loads(output.read_text())["rows"]
    assert {row["id"] for row in rows} == set(ROWS)
    for row in rows:
        assert row["median"] is not None and row["median"] > 0, row
        if row["floor"] is not None:
            assert row["floor"] > 0 and row["ratio"] > 0, row
            assert len(row["samples"]) == len(row["floor_samples"]) >= 1, row
    with_floor = {row["id"] for row in rows if row["floor"] is not None}
    assert with_floor == set(ROWS)
    for row_id in ROWS:
        assert f"| {row_id} |" in stdout
    assert users_of(process.pid) == [], "the benchmark left server users behind"
