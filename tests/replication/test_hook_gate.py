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
from hypothesis import given
from hypothesis import settings as settings_for_hypothesis
from hypothesis import strategies as st

from reconciler.replication import settings_json
from reconciler.server import common, replication, settings
from reconciler.server.hook_gate import (
    FORMAT_VERSION,
    MAX_BASE_DEPTH,
    MODES,
    QUORUM_PREFIXES,
    SETTINGS_PATH,
    nothing_to_do,
    valid_settings,
)
from reconciler.server.library import LIBRARY_DIR
from reconciler.server.replication import run_hook

from .conftest import NAMES, Cluster, build_cluster

ZERO = "0" * 40


def test_the_gate_reads_the_settings_where_the_replication_module_does() -> None:
    assert SETTINGS_PATH == common.SETTINGS_PATH
    assert FORMAT_VERSION == common.FORMAT_VERSION
    assert MAX_BASE_DEPTH == settings.MAX_BASE_DEPTH
    assert MODES == settings.MODES
    assert QUORUM_PREFIXES == replication.QUORUM_PREFIXES


def _parses(data: object) -> bool:
    try:
        settings.parse_settings(data)
    except settings.SettingsError:
        return False
    return True


NAMES_OR_NOT = st.one_of(
    st.sampled_from(["master", "m1.example-2", "", "1st", "é", "a b", "a_b", "Z"]),
    st.integers(),
    st.none(),
)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5000),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.lists(NAMES_OR_NOT, max_size=3),
)
FIELDS = {
    "format_version": st.one_of(st.just(1), VALUES),
    "server": st.one_of(NAMES_OR_NOT, VALUES),
    "peers": st.one_of(st.lists(NAMES_OR_NOT, max_size=3), VALUES),
    "mirror_users": st.one_of(st.lists(st.sampled_from(["git@a", ""]), max_size=2), VALUES),
    "mode": st.one_of(st.sampled_from(["sync", "async", "quorum", "Quorum"]), VALUES),
    "timeout": st.one_of(st.sampled_from([0, 1, 30, 3600, 3600.5, 0.1, -1]), VALUES),
    "run_kept_hooks": st.one_of(st.booleans(), VALUES),
    "admin_repository": st.one_of(st.just("gitosis-admin"), VALUES),
}


@settings_for_hypothesis(max_examples=400, deadline=None)
@given(
    st.fixed_dictionaries(
        {"format_version": st.just(1), "server": st.just("master")},
        optional={k: v for k, v in FIELDS.items() if k not in ("format_version", "server")},
    )
    | st.fixed_dictionaries({}, optional=FIELDS)
    | st.none()
    | st.lists(st.integers())
)
def test_the_gate_takes_the_settings_parse_settings_takes(data: object) -> None:
    assert valid_settings(data) is _parses(data), data


def write(cluster: Cluster, **options: Any) -> None:
    fields: dict[str, Any] = {
        "server": "master",
        "peers": ["mirror"],
        "mirror_users": [f"git@{n}" for n in NAMES],
        **options,
    }
    path = cluster["master"].base / ".reconciler" / "replication.json"
    path.write_bytes(settings_json(**fields))


UPDATE = f"{ZERO} {'1' * 40} refs/heads/main\n"
PROC_RECEIVE = "receive.procReceiveRefs in the repository"
PEER = {"GITOSIS_USER": "git@mirror"}
PERSON = {"GITOSIS_USER": "alice@desk"}
# hook, (settings options, or a file's text), environment, arguments, input -> answer
CASES: dict[str, tuple[str, Any, dict[str, str], list[str], str, bool]] = {
    "post-receive: a peer's push": ("post-receive", {}, PEER, [], UPDATE, True),
    "post-receive: a local peer's push": (
        "post-receive",
        {},
        {"RECONCILER_REPLICA": "mirror"},
        [],
        UPDATE,
        True,
    ),
    "post-receive: no updates": ("post-receive", {}, PERSON, [], "", True),
    "post-receive: a person's push in sync mode": ("post-receive", {}, PERSON, [], UPDATE, False),
    "post-receive: a push without gitosis": ("post-receive", {}, {}, [], UPDATE, False),
    "post-receive: async mode": ("post-receive", {"mode": "async"}, PERSON, [], UPDATE, False),
    "post-receive: a person's push in quorum mode": (
        "post-receive",
        {"mode": "quorum", PROC_RECEIVE: True},
        PERSON,
        [],
        UPDATE,
        True,
    ),
    # Not set up for proc-receive yet (an upgrade halfway): post-receive replicates.
    "post-receive: quorum mode, no receive.procReceiveRefs": (
        "post-receive",
        {"mode": "quorum"},
        PERSON,
        [],
        UPDATE,
        False,
    ),
    "post-receive: quorum mode, the admin repository": (
        "post-receive",
        {"mode": "quorum", "admin_repository": "product"},
        PERSON,
        [],
        UPDATE,
        False,
    ),
    "post-receive: quorum mode with kept hooks to run": (
        "post-receive",
        {"mode": "quorum", "run_kept_hooks": True},
        PERSON,
        [],
        UPDATE,
        False,
    ),
    "post-receive: the drainer's arguments": (
        "post-receive",
        {},
        PEER,
        ["--drain", "x"],
        "",
        False,
    ),
    "post-receive: input that is not ref updates": ("post-receive", {}, PEER, [], "x y\n", False),
    "post-receive: no settings file": ("post-receive", None, PEER, [], UPDATE, False),
    "post-receive: a settings file that is not JSON": (
        "post-receive",
        "{",
        PEER,
        [],
        UPDATE,
        False,
    ),
    "post-receive: settings parse_settings refuses": (
        "post-receive",
        '{"format_version": 1, "server": "master", "mirror_users": ["git@mirror"], "timeout": 0}',
        PEER,
        [],
        UPDATE,
        False,
    ),
    "prepared: a peer's proposal": (
        "reference-transaction",
        {"mode": "quorum"},
        PEER,
        ["prepared"],
        UPDATE,
        True,
    ),
    "prepared: a person's push in quorum mode": (
        "reference-transaction",
        {"mode": "quorum"},
        PERSON,
        ["prepared"],
        UPDATE,
        False,
    ),
    "prepared: sync mode": ("reference-transaction", {}, PERSON, ["prepared"], UPDATE, True),
    "prepared: only HEAD moves": (
        "reference-transaction",
        {"mode": "quorum"},
        PERSON,
        ["prepared"],
        f"{ZERO} {'1' * 40} HEAD\n",
        True,
    ),
    "prepared: a line that is not an update": (
        "reference-transaction",
        {"mode": "quorum"},
        PEER,
        ["prepared"],
        f"{ZERO} zz refs/heads/main\n",
        False,
    ),
    "prepared: no settings file": (
        "reference-transaction",
        None,
        PERSON,
        ["prepared"],
        UPDATE,
        True,
    ),
    "prepared: a peer, broken settings": (
        "reference-transaction",
        "{",
        PEER,
        ["prepared"],
        UPDATE,
        False,
    ),
    "committed (the shell ends it before)": (
        "reference-transaction",
        {"mode": "quorum"},
        PEER,
        ["committed"],
        UPDATE,
        False,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_gate_ends_only_runs_the_hook_would_end_silently(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    hook, settings_given, extra, args, stdin, expected = CASES[case]
    cluster = build_cluster(tmp_path, names=("master", "mirror"))
    path = cluster["master"].base / ".reconciler" / "replication.json"
    if settings_given is None:
        path.unlink()
    elif isinstance(settings_given, str):
        path.write_text(settings_given)
    else:
        settings_given = dict(settings_given)
        proc_receive = settings_given.pop(PROC_RECEIVE, False)
        write(cluster, **settings_given)
    repository = cluster["master"].repository()
    if isinstance(settings_given, dict) and proc_receive:
        subprocess.run(
            ["git", "--git-dir", str(repository), "config", "receive.procReceiveRefs", "refs/"],
            check=True,
        )
    environ = {**cluster.env, "GIT_DIR": str(repository), **extra}
    assert nothing_to_do(hook, args, stdin, environ) is expected
    if not expected:
        return
    # What the replication module does with the same run: nothing, silently.
    said: list[str] = []
    if hook == "post-receive":
        assert run_hook(stdin, environ, said.append) == 0
    else:
        assert replication.transaction_main(args) == 0
    assert said == [] and capsys.readouterr() == ("", "")
    assert cluster.refs("mirror") == {} and cluster["master"].queue() == []


def imported(tmp_path: Path, hook: str, mode: str, **extra: str) -> str:
    """Run an installed command of the library as git does, with one update on its
    input; the modules Python imported (-X importtime)."""
    cluster = build_cluster(tmp_path, names=("master", "mirror"), mode=mode)
    repository = cluster["master"].repository()
    if mode == "quorum":  # as apply sets it up: proc-receive decides, post-receive idles
        subprocess.run(
            ["git", "--git-dir", str(repository), "config", "receive.procReceiveRefs", "refs/"],
            check=True,
        )
    command = tmp_path / "master" / LIBRARY_DIR / "bin" / hook
    text = command.read_text()
    if text.startswith("#!/bin/sh\n"):
        (line,) = [line for line in text.splitlines() if line.startswith("exec ")]
        words = shlex.split(line)[1:]
        # The Python part of the command, as its shell runs it (post-receive's shell
        # gate ends most runs before it: tests/replication/test_post_receive_gate.py).
        state = ["prepared"] if hook == "reference-transaction" else []
        argv = [words[0], "-X", "importtime", *words[1:-1], *state]
    else:
        argv = [sys.executable, "-X", "importtime", str(command)]
    done = subprocess.run(
        argv,
        input=UPDATE,
        env={**cluster.env, "GIT_DIR": str(repository), **extra},
        cwd=repository,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stderr


@pytest.mark.parametrize(
    ("hook", "mode", "user", "replication_imported"),
    [
        ("post-receive", "sync", "git@mirror", False),
        ("post-receive", "quorum", "alice@desk", False),
        ("reference-transaction", "quorum", "git@mirror", False),
        ("post-receive", "sync", "alice@desk", True),
        ("reference-transaction", "quorum", "alice@desk", True),
    ],
    ids=["peer", "quorum", "proposal", "person", "person-quorum"],
)
def test_the_hooks_import_the_replication_module_only_for_work(
    tmp_path: Path, hook: str, mode: str, user: str, replication_imported: bool
) -> None:
    trace = imported(tmp_path, hook, mode, GITOSIS_USER=user)
    assert "reconciler.server.hook_gate" in trace, trace
    assert ("reconciler.server.replication" in trace) is replication_imported, trace


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
