"""The server lock and the drain lock, with real processes holding real flocks.

The execute program runs as it does on a server (``python3 execute.py``, HOME the
server's home, its request on stdin); a clone that never ends is a ``git clone``
whose ssh is a script that sleeps, so the program is caught in the middle of
making a repository.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.server import execute

PROGRAM = execute.__file__
HOLDER = re.compile(r"pid (\d+) since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
WAIT = 30.0


class Processes:
    """Every process a test starts, stopped at its end."""

    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.fake_ssh_pid = tmp_path / "fake-ssh.pid"
        self.fake_ssh = tmp_path / "fake-ssh"
        self.fake_ssh.write_text(f'#!/bin/sh\necho $$ > "{self.fake_ssh_pid}"\nexec sleep 60\n')
        self.fake_ssh.chmod(0o755)
        self.started: list[subprocess.Popen[bytes]] = []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env["HOME"] = str(self.home)
        env["GIT_SSH_COMMAND"] = str(self.fake_ssh)
        return env

    def start(self, argv: list[str], stdin: bytes | None = None) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env(),
            cwd=self.home,
        )
        self.started.append(child)
        if stdin is not None:
            assert child.stdin is not None
            child.stdin.write(stdin)
            child.stdin.close()
            child.stdin = None  # its request is all it reads
        return child

    def program(
        self, actions: list[list[dict[str, Any]]], **request: Any
    ) -> subprocess.Popen[bytes]:
        payload = {"actions": actions, "repositories": "repositories", **request}
        return self.start([sys.executable, PROGRAM], json.dumps(payload).encode())

    def run_program(
        self, actions: list[list[dict[str, Any]]], **request: Any
    ) -> tuple[dict[str, Any], float]:
        started = time.monotonic()
        child = self.program(actions, **request)
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err.decode()
        return json.loads(out), time.monotonic() - started

    def python(self, code: str) -> subprocess.Popen[bytes]:
        """A Python process running ``code``; it prints a line once it holds what it takes."""
        child = self.start([sys.executable, "-c", code])
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"held", child.stderr.read()  # type: ignore[union-attr]
        return child

    def fake_ssh_running(self, timeout: float = 30) -> int:
        """Wait until a clone's ssh runs; its pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                return int(self.fake_ssh_pid.read_text())
            time.sleep(0.01)
        raise AssertionError("the clone's ssh never started")

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            kill_group(int(self.fake_ssh_pid.read_text()))
        for child in self.started:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=10)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    made = Processes(tmp_path)
    try:
        yield made
    finally:
        made.stop()


def kill_group(pid: int) -> None:
    """SIGKILL ``pid`` and its process group, unless that group is the test's own."""
    with contextlib.suppress(OSError):
        if os.getpgid(pid) != os.getpgrp():
            os.killpg(os.getpgid(pid), signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def wait_gone(pid: int, timeout: float) -> float:
    started = time.monotonic()
    while alive(pid) and time.monotonic() - started < timeout:
        time.sleep(0.01)
    return time.monotonic() - started


def temporaries(procs: Processes) -> list[str]:
    directory = procs.home / "repositories"
    return sorted(n for n in os.listdir(directory) if ".tmp-" in n) if directory.is_dir() else []


CLONE = [{"op": "clone_mirror", "path": "repositories/slow.git", "url": "ssh://peer.invalid/x"}]
INIT = [{"op": "init_bare", "path": "repositories/other.git"}]


def holding_server_lock(procs: Processes, who: str = "test holder") -> subprocess.Popen[bytes]:
    """A process holding the server lock through execute's own take_lock until its
    stdin closes."""
    path = procs.home / "repositories" / execute.SERVER_LOCK_PATH
    return procs.python(
        "import sys\n"
        "from reconciler.server.common import take_lock\n"
        f"take_lock({str(path)!r}, 0, {who!r})\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )


def test_a_second_run_stops_after_the_wait_naming_the_holder_and_changes_nothing(
    procs: Processes,
) -> None:
    holder = procs.program([CLONE], holder="reconcile apply by first@desk")
    procs.fake_ssh_running()
    answer, took = procs.run_program([INIT], lock_wait=1, holder="second")
    assert answer["results"] == []
    stop = answer["stop"]
    found = HOLDER.search(stop)
    assert found is not None, stop
    assert int(found.group(1)) == holder.pid
    assert stop.startswith("the server lock repositories/.reconciler/server.lock is held by pid")
    assert "reconcile apply by first@desk" in stop
    assert "gave up after waiting 1s and changed nothing" in stop
    assert 1.0 <= took < 10, took
    assert not (procs.home / "repositories/other.git").exists()
    assert holder.poll() is None  # the holder goes on, untouched


def test_a_second_run_waits_for_the_holder_then_goes_on(procs: Processes) -> None:
    holder = holding_server_lock(procs)
    second = procs.program([INIT], lock_wait=WAIT, holder="second")
    time.sleep(1.0)
    assert not (procs.home / "repositories/other.git").exists()  # still waiting
    assert holder.stdin is not None
    holder.stdin.close()  # the holder ends; its lock goes with it
    out, err = second.communicate(timeout=60)
    answer = json.loads(out)
    assert answer["results"] == [{"ok": True, "error": ""}], err
    # It waited (how long depends on how soon it started on a loaded machine; that it
    # did nothing before the holder ended is checked above).
    assert answer["waited"] >= 0.1
    assert f"pid {holder.pid} since " in answer["waited_for"]
    assert answer["waited_for"].endswith(": test holder")
    assert (procs.home / "repositories/other.git/HEAD").is_file()
    lock = (procs.home / "repositories" / execute.SERVER_LOCK_PATH).read_text()
    assert lock.startswith(f"pid {second.pid} since ") and lock.endswith(": second\n")


def test_a_holder_killed_with_sigkill_lets_go_at_once(procs: Processes) -> None:
    holder = holding_server_lock(procs)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    answer, took = procs.run_program([INIT], lock_wait=0)
    assert answer["results"] == [{"ok": True, "error": ""}]
    assert "waited_for" not in answer and took < 10


def test_the_lock_lasts_while_a_command_of_a_killed_program_runs_and_its_temporary_stays(
    procs: Processes,
) -> None:
    """A program SIGKILLed while its git clone runs on: the clone still holds the lock,
    so nobody removes the temporary it writes into; once the clone is gone the next
    run removes the leftover and makes the repository."""
    holder = procs.program([CLONE])
    ssh = procs.fake_ssh_running()
    (left,) = temporaries(procs)
    assert left.startswith(f".slow.git.tmp-{holder.pid}-")
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    assert alive(ssh)
    redo = [{"op": "init_bare", "path": "repositories/slow.git"}]
    answer, _took = procs.run_program([redo], lock_wait=0.5)
    assert f"held by pid {holder.pid} since " in answer["stop"], answer
    assert temporaries(procs) == [left]
    kill_group(ssh)  # the clone's ssh, and git with it
    answer, _took = procs.run_program([redo], lock_wait=WAIT)
    assert answer["results"] == [{"ok": True, "error": ""}], answer
    assert temporaries(procs) == []
    assert (procs.home / "repositories/slow.git/HEAD").is_file()


@pytest.mark.parametrize("how", ["channel closed", "SIGHUP", "SIGTERM"])
def test_a_program_stops_when_its_channel_closes(procs: Processes, how: str) -> None:
    """The operator's side goes away in the middle of a clone: the program kills the
    clone (git and its ssh), removes its temporary, puts nothing in place, exits, and
    the lock is free."""
    after = [{"op": "write_file", "path": "repositories/after.txt", "content": "x"}]
    program = procs.program([CLONE, after])
    ssh = procs.fake_ssh_running()
    assert temporaries(procs)
    started = time.monotonic()
    if how == "channel closed":
        # What sshd does when the connection drops: its ends of the pipes close.
        assert program.stdout is not None and program.stderr is not None
        program.stdout.close()
        program.stderr.close()
    else:
        program.send_signal(signal.SIGHUP if how == "SIGHUP" else signal.SIGTERM)
    program.wait(timeout=20)
    took = time.monotonic() - started
    assert wait_gone(ssh, 5) < 5, "the clone's ssh was left running"
    assert took < 10, took
    assert temporaries(procs) == []
    assert not (procs.home / "repositories/slow.git").exists()
    assert not (procs.home / "repositories/after.txt").exists()
    answer, _took = procs.run_program([], lock_wait=0)
    assert answer == {"results": [], "waited": answer["waited"]}


def test_the_drain_lock_is_one_lock_for_the_hook_and_for_apply(procs: Processes) -> None:
    """The replication hook's drain_lock and execute's drain_queue exclude each other,
    and each says who holds it in the same words."""
    base = procs.home / "repositories"
    queue = base / ".reconciler/queue"
    queue.mkdir(parents=True)
    entry = queue / "00000000000000000001-1-aaaaaaaaaaaa.json"
    entry.write_text("{}\n")
    drainer = procs.python(
        "import sys\n"
        "from pathlib import Path\n"
        "from reconciler.server.common import drain_lock\n"
        f"with drain_lock(Path({str(base)!r})) as held:\n"
        "    assert held\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    drain = [{"op": "drain_queue", "base": "repositories", "queue": ".reconciler/queue",
              "files": [entry.name]}]  # fmt: skip
    answer, took = procs.run_program([drain], lock_wait=1)
    (result,) = answer["results"]
    assert not result["ok"]
    assert result["error"].startswith("the replication queue's drain lock ")
    assert f"held by pid {drainer.pid} since " in result["error"]
    assert result["error"].split(" since ")[1].split(";")[0].endswith(": replication drainer")
    assert entry.exists() and took >= 1
    assert drainer.stdin is not None
    drainer.stdin.close()
    drainer.wait(timeout=10)

    # And the other way round: apply's take_lock holding it, the hook's finds it taken.
    holder = procs.python(
        "import sys\n"
        "from reconciler.server.common import DRAIN_LOCK_PATH, take_lock\n"
        f"take_lock({str(base)!r} + '/' + DRAIN_LOCK_PATH, 0, 'apply')\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "from pathlib import Path\n"
            "from reconciler.server.common import drain_lock\n"
            f"with drain_lock(Path({str(base)!r})) as held:\n"
            "    print(held)\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert probe.stdout.strip() == "False"
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(timeout=10)
    answer, _took = procs.run_program([drain], lock_wait=1)
    assert answer["results"] == [{"ok": True, "error": ""}]
    assert not entry.exists()
