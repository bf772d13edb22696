"""~/.reconciler/README, table-driven: the gather's fact of the file in, the plan's
lines and ops out, compared as values. The converged facts
(tests.planning.test_planner) hold what the fact reader finds in the README apply
writes (``readme_files``). Then the server's fact reader on real files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from reconciler.planning import PlanContext, PlanOptions, make_plan
from reconciler.planning.readme import readme_text
from reconciler.server.ops import KeepFile, Op, WriteFile
from reconciler.server.readme import README_PATH, is_ours, readme_fact
from reconciler.server.subjects import Gathering
from tests.planning.test_planner import build_context, plan_lines

STAMP = "20250102T030405"
LINE = "a: {} ~/.reconciler/README: a note for whoever logs in as the git user"
NOTHING = "Plan: 0 to create, 0 to change, 0 to remove, 0 conflicts"
ONE_CREATE = "Plan: 1 to create, 0 to change, 0 to remove, 0 conflicts"
ONE_CHANGE = "Plan: 0 to create, 1 to change, 0 to remove, 0 conflicts"
EDITED = "e" * 64


def readme(value: dict[str, Any] | None) -> Any:
    def mutate(data: dict[str, Any]) -> None:
        data["readme"] = value if value is None else {**data["readme"], **value}

    return mutate


def wanted(desired: Any) -> str:
    return readme_text(desired, "a")


def write(expect: str | None) -> Any:
    return lambda desired: WriteFile(README_PATH, wanted(desired), 0o644, expect)


def current(desired: Any) -> str:
    return hashlib.sha256(wanted(desired).encode()).hexdigest()


# facts of a's README -> (plan lines, a's ops: each a value or a function of the
# desired state, exit code)
CASES: dict[str, tuple[Any, list[str], list[Any], int]] = {
    "in place": (readme({}), [NOTHING], [], 0),
    "absent": (readme(None), [LINE.format("+"), ONE_CREATE], [write("absent")], 2),
    "the reconciler's, for an earlier cluster": (
        readme({"sha256": "0" * 64}),
        [LINE.format("~"), ONE_CHANGE],
        [write("0" * 64)],
        2,
    ),
    "its text, another mode": (
        lambda data: data["readme"].update(mode=0o600),
        [LINE.format("~") + " (fix its mode)", ONE_CHANGE],
        ["current"],
        2,
    ),
    "edited by hand": (
        readme({"sha256": EDITED, "ours": False}),
        [
            LINE.format("~") + f", keeping the one edited by hand as "
            f"~/.reconciler/README.edited-{STAMP}",
            ONE_CHANGE,
        ],
        [KeepFile(README_PATH, f".reconciler/README.edited-{STAMP}", EDITED), write(EDITED)],
        2,
    ),
    "not a plain file": (
        readme({"plain": False, "sha256": None, "ours": False}),
        [
            "a: conflict: ~/.reconciler/README is not a plain file; move it away and apply again",
            "Plan: 0 to create, 0 to change, 0 to remove, 1 conflict",
        ],
        [],
        3,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_readme(desired: Any, case: str) -> None:
    mutate, lines, ops, code = CASES[case]
    ctx = build_context(desired, {"a": mutate}, {})
    options = PlanOptions(stamp=STAMP)
    plan = make_plan(PlanContext(ctx.desired, ctx.facts, ctx.checkout, options, ctx.refs))
    assert plan_lines(plan) == lines
    expected: list[Op] = []
    for op in ops:
        if op == "current":
            op = write(current(desired))
        expected.append(op(desired) if callable(op) else op)
    assert [op for action in plan.actions for op in action.ops] == expected
    assert plan.exit_code() == code


def test_the_text_is_the_desired_states_alone(desired: Any) -> None:
    """No time, no facts: the second apply finds it in place. It names the peers and
    ends with its check."""
    text = wanted(desired)
    assert "  b            ssh://git@b.example\n" in text and "git@a.example" not in text
    assert "`reconcile plan`" in text
    assert is_ours(text.encode()) and not is_ours(text.replace("peers", "Peers").encode())


def gathered(home: Path) -> Any:
    return readme_fact(Gathering(str(home), str(home / "repositories"), {}, []))


def test_the_fact_reader_on_real_files(desired: Any, tmp_path: Path) -> None:
    assert gathered(tmp_path) is None
    path = tmp_path / README_PATH
    path.parent.mkdir()
    text = wanted(desired).encode()
    path.write_bytes(text)
    os.chmod(path, 0o644)
    digest = hashlib.sha256(text).hexdigest()
    assert gathered(tmp_path) == {"plain": True, "mode": 0o644, "sha256": digest, "ours": True}
    edited = text.replace(b"peers", b"friends")
    path.write_bytes(edited)
    os.chmod(path, 0o600)
    assert gathered(tmp_path) == {
        "plain": True,
        "mode": 0o600,
        "sha256": hashlib.sha256(edited).hexdigest(),
        "ours": False,
    }
    path.unlink()
    path.mkdir()
    assert gathered(tmp_path)["plain"] is False
