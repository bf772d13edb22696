"""The hook's first look (reconciler.server.hook_gate) and the reference-transaction
wrapper's state filter: the runs that have nothing to do end before the replication
module is imported, and only runs the replication module would end silently too."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler.replication import settings_json
from reconciler.server import common, settings
from reconciler.server.hook_gate import MAX_BASE_DEPTH, SETTINGS_PATH, nothing_to_do
from reconciler.server.library import LIBRARY_DIR
from reconciler.server.replication import run_hook

from .conftest import NAMES, Cluster, build_cluster

ZERO = "0" * 40


def test_the_gate_reads_the_settings_where_the_replication_module_does() -> None:
    assert SETTINGS_PATH == common.SETTINGS_PATH
    assert MAX_BASE_DEPTH == settings.MAX_BASE_DEPTH


def write(cluster: Cluster, **options: Any) -> None:
    fields: dict[str, Any] = {
        "server": "master",
        "peers": ["mirror"],
        "mirror_users": [f"git@{n}" for n in NAMES],
        **options,
    }
    path = cluster["master"].base / ".reconciler" / "replication.json"
    path.write_bytes(settings_json(**fields))


# (settings options, or a file's text; environment; arguments) -> the gate's answer
CASES: dict[str, tuple[Any, dict[str, str], list[str], bool]] = {
    "a peer's push (gitosis user)": ({}, {"GITOSIS_USER": "git@mirror"}, [], True),
    "a peer's push (replica marker)": ({}, {"RECONCILER_REPLICA": "mirror"}, [], True),
    "a person's push in sync mode": ({}, {"GITOSIS_USER": "alice@desk"}, [], False),
    "a push without gitosis in sync mode": ({}, {}, [], False),
    "async mode": ({"mode": "async"}, {"GITOSIS_USER": "alice@desk"}, [], False),
    "a person's push in quorum mode": ({"mode": "quorum"}, {"GITOSIS_USER": "alice"}, [], True),
    "quorum mode, the admin repository": (
        {"mode": "quorum", "admin_repository": "product"},
        {"GITOSIS_USER": "alice"},
        [],
        False,
    ),
    "quorum mode with kept hooks to run": (
        {"mode": "quorum", "run_kept_hooks": True},
        {"GITOSIS_USER": "alice"},
        [],
        False,
    ),
    "the drainer's arguments": ({}, {"GITOSIS_USER": "git@mirror"}, ["--drain", "x"], False),
    "no settings file": (None, {"GITOSIS_USER": "git@mirror"}, [], False),
    "a settings file that is not JSON": ("{", {"GITOSIS_USER": "git@mirror"}, [], False),
    "another format of settings": (
        '{"format_version": 2, "mirror_users": ["git@mirror"]}',
        {"GITOSIS_USER": "git@mirror"},
        [],
        False,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_gate_ends_only_runs_the_hook_would_end_silently(tmp_path: Path, case: str) -> None:
    settings_given, extra, args, expected = CASES[case]
    cluster = build_cluster(tmp_path, names=("master", "mirror"))
    path = cluster["master"].base / ".reconciler" / "replication.json"
    if settings_given is None:
        path.unlink()
    elif isinstance(settings_given, str):
        path.write_text(settings_given)
    else:
        write(cluster, **settings_given)
    repository = cluster["master"].repository()
    environ = {**cluster.env, "GIT_DIR": str(repository), **extra}
    assert nothing_to_do(args, environ) is expected
    if expected:
        # What the replication module does with the same run: nothing, silently.
        sha = cluster.commit("one")
        cluster.push("master", "main", RECONCILER_REPLICA="test")  # on master only
        said: list[str] = []
        assert run_hook(f"{ZERO} {sha} refs/heads/main\n", environ, said.append) == 0
        assert said == []
        assert cluster.refs("mirror") == {} and cluster["master"].queue() == []


def imported(tmp_path: Path, mode: str, **extra: str) -> str:
    """Run the installed bin/post-receive as git does after a push (with no updates:
    whatever runs, nothing moves); the modules Python imported (-X importtime)."""
    cluster = build_cluster(tmp_path, mode=mode)
    repository = cluster["master"].repository()
    command = tmp_path / "master" / LIBRARY_DIR / "bin" / "post-receive"
    env = {**cluster.env, "GIT_DIR": str(repository), **extra}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(command)],
        input="",
        env=env,
        cwd=repository,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


@pytest.mark.parametrize(
    ("mode", "user", "replication"),
    [
        ("sync", "git@mirror", False),
        ("quorum", "alice@desk", False),
        ("sync", "alice@desk", True),
    ],
    ids=["peer", "quorum", "person"],
)
def test_post_receive_imports_the_replication_module_only_when_it_has_work(
    tmp_path: Path, mode: str, user: str, replication: bool
) -> None:
    trace = imported(tmp_path, mode, GITOSIS_USER=user)
    assert "reconciler.server.hook_gate" in trace
    assert ("reconciler.server.replication" in trace) is replication


@pytest.mark.parametrize("state", ["committed", "aborted"])
def test_reference_transaction_ends_in_the_shell_after_prepared(tmp_path: Path, state: str) -> None:
    """Only "prepared" decides: the other states never start Python. The wrapper with
    its interpreter replaced by one that does not exist still succeeds for them."""
    build_cluster(tmp_path, mode="quorum")
    command = tmp_path / "master" / LIBRARY_DIR / "bin" / "reference-transaction"
    text = command.read_text()
    assert text.startswith("#!/bin/sh\n"), text
    lines = text.splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.startswith("exec ")]
    words = shlex.split(lines[at])
    lines[at] = shlex.join([words[0], "/nonexistent/python3", *words[2:]])
    broken = tmp_path / "broken-reference-transaction"
    broken.write_text("\n".join(lines) + "\n")
    for argument, code in ((state, 0), ("prepared", 127)):
        done = subprocess.run(
            ["/bin/sh", str(broken), argument],
            input=f"{ZERO} {'1' * 40} refs/heads/main\n",
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == code, (argument, done.stderr)
