"""The cron lock: one unattended apply per admin checkout."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reconciler.cron import LockHeld, cron_lock


def test_a_second_run_is_refused_naming_the_first_and_the_lock_goes_with_the_first(
    tmp_path: Path,
) -> None:
    subprocess.run(["git", "init", "--quiet", str(tmp_path)], check=True, timeout=60)
    with cron_lock(tmp_path):
        # The line of the server lock: which run, started where, on which checkout.
        line = (tmp_path / ".git" / "reconcile.lock").read_text()
        assert line.startswith(f"pid {os.getpid()} since ")
        assert "reconcile apply by " in line and str(tmp_path) in line
        with pytest.raises(LockHeld) as refused, cron_lock(tmp_path):
            pass
        message = str(refused.value)
        assert message.startswith(f"another reconcile apply is running on {tmp_path} (pid ")
        assert str(tmp_path) in message.split("(", 1)[1]
    with cron_lock(tmp_path):
        pass  # released: the next run takes it
