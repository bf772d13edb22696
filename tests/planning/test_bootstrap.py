"""Planning a bare server: the git user, the server library (with the gitosis runtime),
gitosis-init from it.

Facts in, actions (with their ops, compared as values) out.
"""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.facts import Facts
from reconciler.planning import Phase, PlanContext, make_plan
from reconciler.planning.model import Action
from reconciler.server.library import RUNTIME_BIN
from reconciler.server.ops import AdminUpdate, CreateGitUser, GitosisInit, Op
from reconciler.server_library import install_library_op, library_version
from tests.planning.test_planner import ALICE, HOST_B, build_context


def ops_of(actions: list[Action], server: str, subject: str) -> list[Op]:
    return [op for a in actions if a.server == server and a.subject == subject for op in a.ops]


def no_gitosis(data: dict[str, Any]) -> None:
    """A git user with nothing: no gitosis on its PATH, no runtime, no admin repository."""
    data["gitosis"] = {"runtime": None, "on_path": False}
    data["admin"] = {"exists": False}
    data["repositories"] = {}


def test_missing_git_user_is_created_first_and_alone(desired: Any) -> None:
    ctx = build_context(desired, {}, {})
    facts = Facts(
        servers={"a": ctx.facts.servers["a"]},
        missing_git_users={"b": "git"},
        missing_host_keys={"b": HOST_B},
    )
    plan = make_plan(PlanContext(desired, facts, ctx.checkout, ctx.options, ctx.refs))
    mine = [a for a in plan.actions if a.server == "b"]
    assert [(a.subject, a.kind, a.target, a.phase, a.ops) for a in mine] == [
        ("bootstrap", "create", "git", Phase.BOOTSTRAP, (CreateGitUser("git"),))
    ]
    # b's host key came with the connection: a keeps (or gets) its line, no warning.
    assert not [n for n in plan.notes if n.level in ("warning", "error", "conflict")], plan.notes


def test_no_gitosis_gets_the_runtime_and_init_runs_from_it(desired: Any) -> None:
    def bare(data: dict[str, Any]) -> None:
        no_gitosis(data)
        data["library"] = {"version": None, "intact": False}

    plan = make_plan(build_context(desired, {"b": bare}, {}))
    assert ops_of(list(plan.actions), "b", "library") == [install_library_op(runtime=True)]
    install = next(a for a in plan.actions if a.subject == "library")
    assert install.phase == Phase.BOOTSTRAP and install.kind == "create"
    init, update = ops_of(list(plan.actions), "b", "admin")
    assert init == GitosisInit(ALICE, command=f"{RUNTIME_BIN}/gitosis-init")
    assert isinstance(update, AdminUpdate)
    assert update.init_command == f"{RUNTIME_BIN}/gitosis-init"
    assert not ops_of(list(plan.actions), "a", "library")


def test_gitosis_on_path_is_used_as_it_is(desired: Any) -> None:
    def original_gitosis(data: dict[str, Any]) -> None:
        no_gitosis(data)
        data["gitosis"] = {"runtime": None, "on_path": True}

    plan = make_plan(build_context(desired, {"b": original_gitosis}, {}))
    assert not ops_of(list(plan.actions), "b", "library")
    admin = ops_of(list(plan.actions), "b", "admin")
    assert admin[0] == GitosisInit(ALICE, command=None)


def test_runtime_upgrade_and_current_runtime(desired: Any) -> None:
    def old_runtime(data: dict[str, Any]) -> None:
        data["gitosis"] = {"runtime": "0123456789abcdef", "on_path": False}

    plan = make_plan(build_context(desired, {"b": old_runtime}, {}))
    upgrade = [a for a in plan.actions if a.subject == "library"]
    assert [(a.server, a.kind) for a in upgrade] == [("b", "change")]
    assert "from 0123456789abcdef to " + library_version() in upgrade[0].description
    assert upgrade[0].ops == (install_library_op(runtime=True),)

    def current_runtime(data: dict[str, Any]) -> None:
        data["gitosis"] = {"runtime": library_version(), "on_path": False}

    plan = make_plan(build_context(desired, {"b": current_runtime}, {}))
    assert not plan.actions, plan.actions


# The server library's facts on b -> b's library action (kind, words in its description);
# a runs the original gitosis (on its PATH), so no runtime commands are installed.
LIBRARY_CASES: dict[str, tuple[dict[str, Any], tuple[str, str] | None]] = {
    "current": ({"version": library_version(), "intact": True}, None),
    "missing": ({"version": None, "intact": False}, ("create", "install the server library")),
    "another version": (
        {"version": "0123456789abcdef", "intact": True},
        ("change", f"from 0123456789abcdef to {library_version()}"),
    ),
    "not intact": (
        {"version": library_version(), "intact": False},
        ("change", "its files are not intact"),
    ),
}


@pytest.mark.parametrize("case", list(LIBRARY_CASES))
def test_the_server_library_is_installed_once_per_server(desired: Any, case: str) -> None:
    facts, expected = LIBRARY_CASES[case]

    def library(data: dict[str, Any]) -> None:
        data["library"] = facts

    plan = make_plan(build_context(desired, {"b": library}, {}))
    actions = [a for a in plan.actions if a.subject == "library"]
    if expected is None:
        assert not plan.actions, plan.actions
        return
    kind, words = expected
    assert [(a.server, a.kind, a.phase) for a in actions] == [("b", kind, Phase.BOOTSTRAP)]
    assert words in actions[0].description
    assert actions[0].ops == (install_library_op(runtime=False),)
    # One op for the server, whatever the number of repositories: none for the hooks.
    assert [a for a in plan.actions if a.subject != "library"] == []
