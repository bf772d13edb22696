"""What the replication hooks import: every push pays it, on the pusher's path.

A quorum push starts Python twice in a row on its path (proc-receive here, then
proc-receive on each peer for the proposal, which the proposer waits for), so what
those runs import is a measured cost (benchmark P11, docs/performance.md). The op
catalogue (``reconciler.server.ops``, one dataclass per op kind) and
``concurrent.futures`` (which brings ``logging``) are the largest imports the hooks
have no use for; a peer's proposal is written without the replication module at all.
Run from the library as apply installs it, with ``python3 -IS`` as its commands run.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from reconciler.replication import settings_json
from reconciler.server.library import RUNTIME_BIN
from reconciler.testing.library import install_server_library

from .test_quorum_hook import NAMES, client, commit, env_for, git, value

HEAVY = ("reconciler.server.ops", "concurrent.futures", "logging")
# A peer's write needs no temporary files and names no queue entries either.
PEER_HEAVY = (*HEAVY, "tempfile", "shutil", "secrets")

# Runs proc-receive's main as receive-pack would, in a fresh interpreter, then prints
# what it answered and which modules it had imported.
CONVERSATION = r"""
import io, json, os, sys
sys.path.insert(0, sys.argv[1])
from reconciler.server import proc_receive as pr
old, new, ref = sys.argv[2:5]
stdin = io.BytesIO(
    pr.pkt("version=1\0report-status") + pr.FLUSH + pr.pkt(f"{old} {new} {ref}") + pr.FLUSH
)
stdout = io.BytesIO()
code = pr.main(stdin, stdout, os.environ)
answer = stdout.getvalue().decode()
print(json.dumps({"code": code, "answer": answer, "modules": sorted(sys.modules)}))
"""


def library(home: Path) -> str:
    found = sorted((home / ".reconciler" / "server").glob("lib-*"))
    assert len(found) == 1, found
    return str(found[0])


def test_the_hooks_never_import_the_op_catalogue(tmp_path: Path) -> None:
    install_server_library(tmp_path)
    lib = library(tmp_path)
    for entry in ("proc_receive", "replication", "hook_gate"):
        done = subprocess.run(
            [
                "python3",
                "-IS",
                "-c",
                "import sys, json; sys.path.insert(0, sys.argv[1]); "
                f"import reconciler.server.{entry}; print(json.dumps(sorted(sys.modules)))",
                lib,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        modules = set(json.loads(done.stdout))
        assert f"reconciler.server.{entry}" in modules
        assert not modules & set(HEAVY), (entry, sorted(modules & set(HEAVY)))


def test_a_peers_proposal_is_written_without_the_replication_module(tmp_path: Path) -> None:
    base = tmp_path / "repositories"
    (base / ".reconciler").mkdir(parents=True)
    repo = base / "p.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True, timeout=60)
    (base / ".reconciler" / "replication.json").write_bytes(
        settings_json(
            server="a",
            peers=NAMES,
            mirror_users=[f"git@{n}" for n in NAMES],
            mode="quorum",
            timeout=10,
        )
    )
    install_server_library(tmp_path)
    work = client(tmp_path)
    first = commit(work)
    second = commit(work, first)
    git(work, "push", "-q", str(repo), f"{second}:refs/heads/side")  # the objects
    zero = "0" * 40

    def converse(user: str, old: str, new: str) -> dict[str, object]:
        done = subprocess.run(
            ["python3", "-IS", "-c", CONVERSATION, library(tmp_path), old, new, "refs/heads/m"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env=env_for(GIT_DIR=str(repo), GITOSIS_USER=user),
        )
        answer: dict[str, object] = json.loads(done.stdout)
        return answer

    # A peer's proposal: written with compare-and-swap, answered, no vote.
    taken = converse("git@b", zero, first)
    assert taken["code"] == 0
    assert "ok refs/heads/m" in str(taken["answer"])
    assert value(repo, "refs/heads/m") == first
    modules = set(taken["modules"])  # type: ignore[arg-type]
    assert "reconciler.server.replication" not in modules
    assert not modules & set(PEER_HEAVY), sorted(modules & set(PEER_HEAVY))
    # Compare-and-swap still holds on that path: a proposal from a value the ref no
    # longer has is refused, and the ref is unchanged.
    stale = converse("git@c", zero, second)
    assert "ng refs/heads/m" in str(stale["answer"]), stale["answer"]
    assert value(repo, "refs/heads/m") == first
    # A person's push is the replication module's to decide (here: a vote, which
    # the peers, unreachable, refuse).
    person = converse("alice", first, second)
    assert "reconciler.server.replication" in set(person["modules"])  # type: ignore[arg-type]
    assert "ng refs/heads/m" in str(person["answer"]), person["answer"]
    assert value(repo, "refs/heads/m") == first


def test_every_command_the_library_installs_skips_the_site_packages(tmp_path: Path) -> None:
    """``python3 -I`` still runs the site packages' start-up files (.pth); on this
    kind of machine one of them imports certifi, 55 ms of every hook's start. The
    library and the gitosis runtime use the standard library alone: ``-IS``."""
    install_server_library(tmp_path, runtime=True)
    commands = [
        *(tmp_path / ".reconciler" / "server" / "bin").iterdir(),
        *(tmp_path / RUNTIME_BIN).iterdir(),
    ]
    assert len(commands) >= 6, commands
    for command in commands:
        text = command.read_text()
        pythons = [
            line
            for line in text.splitlines()
            if "python" in line and line.startswith(("#!", "exec "))
        ]
        assert pythons, (command, text)
        for line in pythons:
            assert " -IS " in line + " ", (command.name, line)


def test_the_installed_proc_receive_writes_a_proposal_without_the_replication_module(
    tmp_path: Path,
) -> None:
    """The command receive-pack runs (bin/proc-receive, as apply installs it), not only
    the function: its entry point must not import the replication module either."""
    base = tmp_path / "repositories"
    (base / ".reconciler").mkdir(parents=True)
    repo = base / "p.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True, timeout=60)
    (base / ".reconciler" / "replication.json").write_bytes(
        settings_json(server="a", peers=NAMES, mirror_users=["git@b"], mode="quorum")
    )
    install_server_library(tmp_path)
    work = client(tmp_path)
    first = commit(work)
    git(work, "push", "-q", str(repo), f"{first}:refs/heads/side")
    command = tmp_path / ".reconciler" / "server" / "bin" / "proc-receive"
    line = f"{'0' * 40} {first} refs/heads/m\n".encode()
    conversation = (
        b"%04x" % (len(b"version=1\0report-status\n") + 4)
        + b"version=1\0report-status\n0000"
        + b"%04x" % (len(line) + 4)
        + line
        + b"0000"
    )
    done = subprocess.run(
        ["python3", "-X", "importtime", str(command)],
        input=conversation,
        capture_output=True,
        timeout=60,
        check=False,
        env=env_for(GIT_DIR=str(repo), GITOSIS_USER="git@b"),
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"ok refs/heads/m" in done.stdout, done.stdout
    assert value(repo, "refs/heads/m") == first
    trace = done.stderr.decode()
    assert "reconciler.server.proc_receive" in trace
    assert "reconciler.server.replication" not in trace, trace[-3000:]
