"""The ``ssh_config_block`` op on a real file, read back by the real ``ssh -G``."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from reconciler.planning.ssh_config import CONTROL_PERSIST
from reconciler.server import common
from reconciler.server.common import OpError
from reconciler.server.ops import SshConfigBlock
from reconciler.server.ssh_config import BLOCK_BEGIN, BLOCK_END, op_ssh_config_block
from tests.planning.test_planner import managed_ssh_config

BLOCK = managed_ssh_config("peer.example 127.0.0.1")
# A person's file: a global option first (before any Host line), a host of their
# own, a byte that is not UTF-8, and no newline at the end.
FOREIGN = b"ServerAliveInterval 42\n\n# mine\nHost backup.example\n    User b\xe9\n    Port 2200"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(common, "HOME", str(tmp_path))
    return tmp_path


def run(block: list[str]) -> None:
    op_ssh_config_block(SshConfigBlock(".ssh/config", tuple(block)))


def effective(config: Path, host: str) -> dict[str, str]:
    if shutil.which("ssh") is None:
        pytest.skip("ssh is not installed")
    out = subprocess.run(
        ["ssh", "-F", str(config), "-G", host], capture_output=True, check=True
    ).stdout.decode("utf-8", "replace")
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def test_the_block_goes_first_and_a_persons_lines_stay_byte_for_byte(home: Path) -> None:
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o755)
    config = ssh / "config"
    config.write_bytes(FOREIGN)
    config.chmod(0o644)
    run(BLOCK)
    data = config.read_bytes()
    assert data == ("\n".join(BLOCK) + "\n").encode() + FOREIGN
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    # The person's global option still holds for every other host, and their host
    # keeps its settings; the peers get the block's values (ssh takes the first).
    other = effective(config, "elsewhere.example")
    assert (other["serveraliveinterval"], other["controlmaster"]) == ("42", "false")
    backup = effective(config, "backup.example")
    assert (backup["port"], backup["controlmaster"]) == ("2200", "false")
    peer = effective(config, "peer.example")
    assert peer["controlmaster"] == "auto"
    assert peer["controlpersist"] == str(CONTROL_PERSIST)
    assert peer["serveraliveinterval"] == "10"
    assert re.fullmatch(r"/.+/\.ssh/cm-[0-9a-f]{40}", peer["controlpath"]), peer["controlpath"]

    before = config.stat().st_mtime_ns
    run(BLOCK)
    assert config.stat().st_mtime_ns == before  # the same block: not written again


def test_a_changed_block_is_replaced_where_it_is_and_an_empty_one_removed(home: Path) -> None:
    config = home / ".ssh" / "config"
    run(BLOCK)  # no ~/.ssh yet: made 0700
    assert stat.S_IMODE((home / ".ssh").stat().st_mode) == 0o700
    # A person adds lines around it.
    config.write_text("Host first\n    User one\n" + config.read_text() + "Host last\n    Port 1\n")
    new = managed_ssh_config("other.example")
    run(new)
    assert config.read_text() == (
        "Host first\n    User one\n"
        + "".join(f"{line}\n" for line in new)
        + "Host last\n    Port 1\n"
    )
    run([])
    assert config.read_text() == "Host first\n    User one\nHost last\n    Port 1\n"
    run([])  # nothing left to remove


def test_a_block_without_its_end_marker_is_refused_and_nothing_changes(home: Path) -> None:
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700)
    config = ssh / "config"
    text = f"{BLOCK_BEGIN}\nHost x\n    User person\n"
    config.write_text(text)
    with pytest.raises(OpError, match=f"no {BLOCK_END!r} after it"):
        run(BLOCK)
    assert config.read_text() == text


def test_no_file_and_no_block_writes_nothing(home: Path) -> None:
    run([])
    assert not (home / ".ssh" / "config").exists()
