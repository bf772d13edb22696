"""The ssh config block (persistent connections to the peers), table-driven: facts of
~/.ssh/config in, plan lines out. The converged facts (tests.planning.test_planner)
hold the block already."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from reconciler.planning import make_plan
from reconciler.planning.hooks import template_entries
from reconciler.server.hooks import stub
from reconciler.server.ops import SshConfigBlock
from reconciler.server.ssh_config import BLOCK_BEGIN, BLOCK_END
from reconciler.server.template import template_digest
from tests.planning.test_planner import build_context, managed_ssh_config, plan_lines

PERSON = ["# mine", "Host backup.example", "    User backup"]
CREATE = "a: + ssh config: keep the connections to b open"
CHANGE = "a: ~ ssh config: keep the connections to b open"
ONE_CREATE = "Plan: 1 to create, 0 to change, 0 to remove, 0 conflicts"
ONE_CHANGE = "Plan: 0 to create, 1 to change, 0 to remove, 0 conflicts"


def config(lines: list[str] | None) -> Any:
    def mutate(data: dict[str, Any]) -> None:
        data["ssh_config"] = lines

    return mutate


def long_home(data: dict[str, Any]) -> None:
    data["home"] = "/srv/" + "h" * 40
    for repository in data["repositories"].values():  # their stubs name the home
        repository["hook"]["sha256"] = hashlib.sha256(stub(data["home"])).hexdigest()
    # So does the git template (its hooks are the stub).
    digest = template_digest(template_entries("sync", data["home"]))
    data["git_template"] = {
        "configured": f"{data['home']}/.reconciler/templates/{digest}",
        "digest": digest,
    }


EDITED = [line.replace("300", "3") for line in managed_ssh_config("b.example")]
CASES: dict[str, tuple[Any, list[str], int]] = {
    "no ~/.ssh/config": (config(None), [CREATE, ONE_CREATE], 2),
    "a person's file without the block": (config(PERSON), [CREATE, ONE_CREATE], 2),
    "the block after a person's lines is left where it is": (
        config([*PERSON, *managed_ssh_config("b.example")]),
        ["Plan: 0 to create, 0 to change, 0 to remove, 0 conflicts"],
        0,
    ),
    "a block naming a dropped server's host": (
        config(managed_ssh_config("b.example old.example")),
        [CHANGE, ONE_CHANGE],
        2,
    ),
    "a block edited by hand": (config([*PERSON, *EDITED]), [CHANGE, ONE_CHANGE], 2),
    "a block without its end marker needs a person": (
        config([BLOCK_BEGIN, "Host b.example", *PERSON]),
        [
            f"a: conflict: ~/.ssh/config has the line {BLOCK_BEGIN!r} but no {BLOCK_END!r} "
            "after it; fix the file by hand (nothing in it was changed)",
            "Plan: 0 to create, 0 to change, 0 to remove, 1 conflict",
        ],
        3,
    ),
    # /srv/hhh.../.ssh/cm- + 40 + 17 is 111 bytes: ssh could not bind the socket and
    # would refuse every connection to the peers, so the block goes.
    "a home too long for a control socket": (
        long_home,
        [
            "a: - ssh config: remove the block for the peers' connections",
            "a: warning: connections to the peers are not kept open: a control socket under "
            f"/srv/{'h' * 40}/.ssh would be longer than the 107 bytes a Unix socket path may have",
            "Plan: 0 to create, 0 to change, 1 to remove, 0 conflicts",
        ],
        2,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_plan_ssh_config(desired: Any, case: str) -> None:
    mutate, expected, code = CASES[case]
    plan = make_plan(build_context(desired, {"a": mutate}, {}))
    assert plan_lines(plan) == expected
    assert plan.exit_code() == code


def test_the_op_carries_only_the_block(desired: Any) -> None:
    """The person's lines never travel in the plan: the op names the block, and the
    server keeps whatever else the file holds."""
    plan = make_plan(build_context(desired, {"a": config(PERSON)}, {}))
    (action,) = plan.actions
    assert action.subject == "ssh-config" and action.target == "~/.ssh/config"
    assert action.ops == (
        SshConfigBlock(".ssh/config", tuple(managed_ssh_config("b.example")), 0o600, 0o700),
    )
