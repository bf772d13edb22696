"""Repository settings, table-driven: cluster.d/ and gathered facts in, actions with
their typed ops out, compared as values.

The expected files are what gitosis writes for the rendered gitosis.conf once the
planned repositories exist (reconciler.gitosis.repositories, GITOSIS.md).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler.desired import Desired, load
from reconciler.errors import ServerError
from reconciler.facts import Facts, parse_server_facts
from reconciler.planning import PlanContext, PlanOptions, make_plan
from reconciler.planning.model import Action
from reconciler.planning.repository_settings import gather_request
from reconciler.refs import RefReport
from reconciler.server.ops import Op, RemoveFile, WriteFile
from tests.planning.test_planner import ALICE, base_facts, settled_checkout

LISTED = "product.git Alice+Smith\ntools%2Fbuild.git\n"

SETTINGS: dict[str, dict[str, Any]] = {
    "product": {
        "description": "The product",
        "owner": "Alice Smith",
        "gitweb": True,
        "daemon": True,
    },
    "tools/build": {"gitweb": True},
    "docs": {"description": "Docs", "gitweb": False, "daemon": False},
    "plain": {},
}


def cluster(repositories: dict[str, dict[str, Any]]) -> str:
    names = list(repositories)
    document = {
        "cluster": {"name": "t"},
        "servers": {"a": {"url": "ssh://git@a.example:2222"}, "b": {"url": "ssh://git@b.example"}},
        "repositories": repositories,
        "groups": {
            "gitosis-admin": {"members": ["alice"], "writable": ["gitosis-admin"]},
            "devs": {"members": ["alice"], "writable": names},
        },
        "users": {"alice": ALICE},
    }
    return json.dumps(document)


def converged(desired: Desired) -> dict[str, dict[str, Any]]:
    """Both servers hold every declared repository and exactly gitosis's files."""
    servers = base_facts(desired)
    for data in servers.values():
        template = data["repositories"]["product"]
        for name in desired.repositories:
            data["repositories"].setdefault(name, copy.deepcopy(template))
        sections = {}
        request = gather_request(desired)
        for name in request["repo_sections"]:  # type: ignore[attr-defined]
            sections[name] = {}
            repository = desired.repositories[name]
            if repository.description:
                sections[name]["description"] = repository.description + "\n"
            if repository.daemon:
                data["repositories"][name]["export_ok"] = True
        data["repo_sections"] = sections
        data["projects_list"] = None
    return servers


Mutation = Callable[[dict[str, Any]], None]


def on_a(mutate: Mutation) -> dict[str, Mutation]:
    return {"a": mutate}


def listed(text: str | None) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data["projects_list"] = text

    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        for m in mutations:
            m(data)

    return mutate


def just_created(data: dict[str, Any]) -> None:
    """After the admin push to a fresh server: gitosis wrote its files, then apply
    created the repositories (git's default description, no export flag)."""
    for name in ("product", "tools/build", "docs"):
        del data["repositories"][name]
    data["repo_sections"] = {"product": {}, "tools/build": {}, "docs": {}}
    data["projects_list"] = "product Alice+Smith\ntools%2Fbuild\n"


def default_description(data: dict[str, Any]) -> None:
    data["repo_sections"]["product"]["description"] = "Unnamed repository; edit this file.\n"


def flag(name: str, value: bool) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        if name not in data["repositories"]:
            data["repositories"][name] = copy.deepcopy(data["repositories"]["product"])
        data["repositories"][name]["export_ok"] = value

    return mutate


def unmanaged(name: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data["repositories"][name] = copy.deepcopy(data["repositories"]["product"])
        data["repositories"][name].pop("export_ok", None)

    return mutate


def plain_dir(name: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data["repo_sections"][name] = {"plain": True, "description": None}

    return mutate


# (server, symbol, description, ops): an action as a value.
Row = tuple[str, str, str, tuple[Op, ...]]


def describe(name: str, text: str, where: str | None = None) -> WriteFile:
    return WriteFile(f"repositories/{where or name + '.git'}/description", f"{text}\n")


def export(name: str) -> WriteFile:
    return WriteFile(f"repositories/{name}.git/git-daemon-export-ok", "", mode=0o644)


def unexport(name: str) -> RemoveFile:
    return RemoveFile(f"repositories/{name}.git/git-daemon-export-ok")


def projects(text: str) -> WriteFile:
    return WriteFile("gitosis/projects.list", text, mode=0o644)


CASES: dict[str, tuple[dict[str, dict[str, Any]], dict[str, Mutation], list[Row]]] = {
    # name: (cluster.d/ repositories, facts mutations per server, expected actions as values)
    "converged": (SETTINGS, {"a": listed(LISTED), "b": listed(LISTED)}, []),
    "repositories apply just created": (
        SETTINGS,
        {"a": listed(LISTED), "b": just_created},
        [
            ("b", "+", "docs: description 'Docs'", (describe("docs", "Docs"),)),
            ("b", "~", "gitweb's projects.list: 2 repositories listed", (projects(LISTED),)),
            ("b", "+", "product: description 'The product'", (describe("product", "The product"),)),
            ("b", "+", "product: git-daemon-export-ok (daemon = yes)", (export("product"),)),
        ],
    ),
    "git's default description is replaced": (
        SETTINGS,
        {"a": both(listed(LISTED), default_description), "b": listed(LISTED)},
        [("a", "~", "product: description 'The product'", (describe("product", "The product"),))],
    ),
    "a description dropped from cluster.d/ is left as it is, as gitosis does": (
        {**SETTINGS, "product": {**SETTINGS["product"], "description": None}},
        {"a": both(listed(LISTED), default_description), "b": listed(LISTED)},
        [],
    ),
    "daemon: false removes the export flag": (
        SETTINGS,
        {"a": both(listed(LISTED), flag("docs", True)), "b": listed(LISTED)},
        [("a", "-", "docs: remove git-daemon-export-ok (daemon is off)", (unexport("docs"),))],
    ),
    "daemon not set removes the export flag (gitosis's default is off)": (
        SETTINGS,
        {"a": both(listed(LISTED), flag("tools/build", True)), "b": listed(LISTED)},
        [
            (
                "a",
                "-",
                "tools/build: remove git-daemon-export-ok (daemon is off)",
                (unexport("tools/build"),),
            )
        ],
    ),
    "daemon: true creates a missing export flag": (
        SETTINGS,
        {"a": both(listed(LISTED), flag("product", False)), "b": listed(LISTED)},
        [("a", "+", "product: git-daemon-export-ok (daemon = yes)", (export("product"),))],
    ),
    "an unmanaged repository's export flag goes, as at gitosis's next admin push": (
        SETTINGS,
        {
            "a": both(listed(LISTED), unmanaged("scratch"), flag("scratch", True)),
            "b": listed(LISTED),
        },
        [
            (
                "a",
                "-",
                "scratch: remove git-daemon-export-ok (not in cluster.d/; gitosis removes it too)",
                (unexport("scratch"),),
            )
        ],
    ),
    "an unmanaged repository without the flag is not touched": (
        SETTINGS,
        {"a": both(listed(LISTED), unmanaged("scratch")), "b": listed(LISTED)},
        [],
    ),
    "gitweb: false takes the line out of projects.list": (
        SETTINGS,
        {"a": listed(LISTED + "docs.git\n"), "b": listed(LISTED)},
        [("a", "~", "gitweb's projects.list: 2 repositories listed", (projects(LISTED),))],
    ),
    "a repository dropped from cluster.d/ leaves projects.list": (
        SETTINGS,
        {"a": both(listed(LISTED + "old.git\n"), unmanaged("old")), "b": listed(LISTED)},
        [("a", "~", "gitweb's projects.list: 2 repositories listed", (projects(LISTED),))],
    ),
    "a missing projects.list is written": (
        SETTINGS,
        {"a": listed(None), "b": listed(LISTED)},
        [("a", "+", "gitweb's projects.list: 2 repositories listed", (projects(LISTED),))],
    ),
    "a missing projects.list with nothing to list is the same as an empty one": (
        {"product": {"description": "The product"}},
        {"a": listed(None), "b": listed("")},
        [],
    ),
    "nothing listed empties projects.list": (
        {"product": {"gitweb": False}},
        {"a": listed("product.git\n"), "b": listed(None)},
        [("a", "~", "gitweb's projects.list: 0 repositories listed", (projects(""),))],
    ),
    "gitosis 0.3's Python 2 quoting of ~ is in sync too": (
        {"product": {"owner": "al~ice", "gitweb": True}},
        {"a": listed("product.git al%7Eice\n"), "b": listed("product.git al~ice\n")},
        [],
    ),
    "an owner change rewrites projects.list": (
        {"product": {"owner": "Bob", "gitweb": True}},
        {"a": listed("product.git Alice\n"), "b": listed("product.git Bob\n")},
        [
            (
                "a",
                "~",
                "gitweb's projects.list: 1 repository listed",
                (projects("product.git Bob\n"),),
            )
        ],
    ),
    "a directory named like the repository wins, as in gitosis": (
        {"proj": {"description": "P", "gitweb": True}, "proj/sub": {}},
        {"a": both(listed("proj\n"), plain_dir("proj")), "b": listed("proj\n")},
        [
            ("a", "+", "proj: description 'P'", (describe("proj", "P", where="proj"),)),
            ("b", "+", "proj: description 'P'", (describe("proj", "P", where="proj"),)),
        ],
    ),
}


def setting_rows(actions: tuple[Action, ...]) -> list[Row]:
    return [
        (a.server, a.symbol, a.description, a.ops)
        for a in actions
        if a.subject == "repository-settings"
    ]


def desired_for(tmp_path: Path, repositories: dict[str, dict[str, Any]]) -> Desired:
    spec = {name: {k: v for k, v in s.items() if v is not None} for name, s in repositories.items()}
    (tmp_path / "cluster.d").mkdir(exist_ok=True)
    (tmp_path / "cluster.d" / "cluster.yaml").write_text(cluster(spec))
    return load(tmp_path)


def context(
    desired: Desired,
    servers: dict[str, dict[str, Any]],
    options: PlanOptions | None = None,
    errors: dict[str, ServerError] | None = None,
) -> PlanContext:
    facts = Facts(
        servers={n: parse_server_facts(n, d) for n, d in servers.items()}, errors=errors or {}
    )
    return PlanContext(
        desired,
        facts,
        settled_checkout(desired, facts),
        options or PlanOptions(),
        RefReport(),
    )


@pytest.mark.parametrize("case", list(CASES))
def test_repository_settings(tmp_path: Path, case: str) -> None:
    repositories, mutations, expected = CASES[case]
    desired = desired_for(tmp_path, repositories)
    servers = converged(desired)
    for name, mutate in mutations.items():
        mutate(servers[name])
    assert setting_rows(make_plan(context(desired, servers)).actions) == expected


def test_ops_write_what_gitosis_writes(tmp_path: Path) -> None:
    desired = desired_for(tmp_path, SETTINGS)
    servers = converged(desired)
    just_created(servers["b"])
    servers["a"]["projects_list"] = LISTED
    servers["b"]["repositories"]["scratch"] = copy.deepcopy(servers["a"]["repositories"]["docs"])
    servers["b"]["repositories"]["scratch"]["export_ok"] = True
    actions = [
        a
        for a in make_plan(context(desired, servers)).actions
        if a.subject == "repository-settings"
    ]
    assert {a.target: a.ops for a in actions} == {
        "docs description": (WriteFile("repositories/docs.git/description", "Docs\n"),),
        "product description": (
            WriteFile("repositories/product.git/description", "The product\n"),
        ),
        "product git-daemon-export-ok": (
            WriteFile("repositories/product.git/git-daemon-export-ok", "", mode=0o644),
        ),
        "scratch git-daemon-export-ok": (
            RemoveFile("repositories/scratch.git/git-daemon-export-ok"),
        ),
        "gitosis/projects.list": (WriteFile("gitosis/projects.list", LISTED, mode=0o644),),
    }
    # The settings run after the repositories are created, in the same phase.
    order = [a.subject for a in make_plan(context(desired, servers)).actions if a.server == "b"]
    assert order.index("repository") < order.index("repository-settings")


def test_unreachable_and_unplanned_servers_get_nothing(tmp_path: Path) -> None:
    desired = desired_for(tmp_path, SETTINGS)
    servers = converged(desired)
    just_created(servers["a"])
    just_created(servers["b"])
    only_b = PlanOptions(only_servers=("b",))
    assert {a.server for a in make_plan(context(desired, servers, only_b)).actions} == {"b"}
    down = {"b": ServerError("b", "cannot connect")}
    plan = make_plan(context(desired, {"a": servers["a"]}, errors=down))
    assert {a.server for a in plan.actions if a.subject == "repository-settings"} == {"a"}


def test_gather_request_names_the_sections(tmp_path: Path) -> None:
    desired = desired_for(tmp_path, SETTINGS)
    assert gather_request(desired) == {
        "repo_sections": ["product", "tools/build", "docs"],
        "descriptions": ["product", "docs"],
        "projects_list": "gitosis/projects.list",
    }
