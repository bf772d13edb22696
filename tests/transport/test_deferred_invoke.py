"""paramiko's import of invoke (for an ssh config's ``Match exec``) is deferred to its
first use: the plan does not pay for unittest.mock and asyncio, and a Match exec
still runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROGRAM = """
import sys
from reconciler.gather import _defer_invoke
_defer_invoke()
import paramiko
assert "invoke.context" not in sys.modules and "asyncio" not in sys.modules, "invoke imported"
config = paramiko.SSHConfig.from_path(sys.argv[1])
assert config.lookup("example.com")["user"] == "matched", config.lookup("example.com")
import invoke
assert sys.modules["invoke"] is invoke and type(invoke).__name__ == "module"
assert paramiko.config.invoke.run is invoke.run
print("ok")
"""


def test_paramiko_imports_without_invoke_and_match_exec_still_runs(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Match exec true\n    User matched\n")
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
