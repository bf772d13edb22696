"""``common.bounded``: a command stopped at its timeout returns soon after, even when
a process outside its group (an ssh connection master holding the descriptors of the
sessions it runs) keeps its pipes open."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from reconciler.server.common import bounded
from reconciler.testing.cluster import pid_alive


def test_a_pipe_held_outside_the_group_does_not_hold_up_the_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "escaped.pid"
    # The child leaves its group (setsid, as a ControlPersist master does) with the
    # pipes still open, then the command itself hangs past its timeout.
    script = f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 60' & echo started >&2; exec sleep 60"
    started = time.monotonic()
    try:
        done = bounded(["sh", "-c", script], timeout=1.0, gentle=False)
        elapsed = time.monotonic() - started
    finally:
        deadline = time.monotonic() + 10
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        escaped = int(pidfile.read_text())
        os.kill(escaped, signal.SIGKILL)
    assert done.timed_out
    assert b"started" in done.stderr  # what the command said before it was stopped
    assert elapsed < 3.0, elapsed  # it waited 1 + 5 s before
    deadline = time.monotonic() + 5
    while pid_alive(escaped) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(escaped)
