"""The git template in the plan: made where ~/.gitconfig names none, made again when
damaged or when the hooks every repository gets change, a foreign one a conflict."""

from __future__ import annotations

from typing import Any

from reconciler.planning import make_plan
from reconciler.planning.hooks import repository_config, repository_hooks, template_entries
from reconciler.server.hooks import HOOK_MODE, stub
from reconciler.server.ops import InstallTemplate, SetTemplateDir
from reconciler.server.template import GIT_DEFAULT_FILES, template_digest
from reconciler.server_library import library_version
from tests.planning.test_planner import build_context, plan_lines, template_fact


def with_template(**fact: Any) -> Any:
    def mutate(data: dict[str, Any]) -> None:
        data["git_template"] = fact

    return mutate


def digest_of(name: str, mode: str = "sync") -> str:
    return template_digest(template_entries(mode, f"/home/{name}"))


def test_the_template_holds_what_every_repository_gets() -> None:
    # What git's own template gives a repository, but the sample hooks.
    default = {path: {"content": text, "mode": 0o644} for path, text in GIT_DEFAULT_FILES.items()}
    assert set(default) == {"description", "info/exclude"}
    assert template_entries("sync", "/home/a") == {
        **default,
        "hooks/post-receive": {"content": stub("/home/a").decode(), "mode": HOOK_MODE},
    }
    assert template_entries("quorum", "/home/a") == {
        **default,
        "hooks/post-receive": {"content": stub("/home/a").decode(), "mode": HOOK_MODE},
        "hooks/proc-receive": {"link": "post-receive"},
        "config": {
            "content": '[receive]\n\tprocReceiveRefs = "refs/heads/"\n'
            '\tprocReceiveRefs = "refs/tags/"\n\tprocReceiveRefs = "refs/notes/"\n',
            "mode": 0o644,
        },
    }
    # One list for both: what the per-repository planner keeps is what the template holds.
    for mode in ("sync", "async", "quorum"):
        names = {f"hooks/{hook.name}" for hook in repository_hooks(mode, "/home/a")}
        config = {"config"} if repository_config(mode) else set()
        assert set(template_entries(mode, "/home/a")) - set(default) == names | config


def test_missing_template_is_planned_with_both_ops(desired: Any) -> None:
    ctx = build_context(desired, {"b": with_template(configured=None, digest=None)}, {})
    plan = make_plan(ctx)
    digest = digest_of("b")
    assert plan_lines(plan) == [
        f"b: + git template ~/.reconciler/templates/{digest} (hooks/post-receive) "
        "as init.templateDir in ~/.gitconfig",
        "Plan: 1 to create, 0 to change, 0 to remove, 0 conflicts",
    ]
    (action,) = plan.actions
    assert action.target == "~/.gitconfig init.templateDir"
    install, point = action.ops
    assert install == InstallTemplate(
        digest, template_entries("sync", "/home/b"), library_version()
    )
    assert point == SetTemplateDir(f"/home/b/.reconciler/templates/{digest}", None)


def test_a_damaged_or_outdated_template_is_made_again(desired: Any) -> None:
    ours = template_fact("a")
    damaged = with_template(configured=ours["configured"], digest="0" * 16)
    outdated = with_template(
        configured="/home/b/.reconciler/templates/0123456789abcdef", digest="x"
    )
    plan = make_plan(build_context(desired, {"a": damaged, "b": outdated}, {}))
    assert plan_lines(plan) == [
        f"a: ~ git template ~/.reconciler/templates/{digest_of('a')}: make it again "
        "(it does not hold hooks/post-receive)",
        f"b: ~ git template ~/.reconciler/templates/{digest_of('b')} (hooks/post-receive) "
        "as init.templateDir, replacing 0123456789abcdef",
        "Plan: 0 to create, 2 to change, 0 to remove, 0 conflicts",
    ]
    assert plan.actions[1].ops[1].expect == "/home/b/.reconciler/templates/0123456789abcdef"


def test_a_foreign_template_dir_is_a_conflict_never_replaced(desired: Any) -> None:
    foreign = with_template(configured="/usr/share/company/git-template", digest=None)
    plan = make_plan(build_context(desired, {"a": foreign}, {}))
    assert plan_lines(plan) == [
        "a: conflict: ~/.gitconfig sets init.templateDir to /usr/share/company/git-template, "
        "not the reconciler's template: a repository gitosis creates on its first push gets "
        "no replication hook until the next apply; unset it (git config --global --unset "
        "init.templateDir) and apply again",
        "Plan: 0 to create, 0 to change, 0 to remove, 1 conflict",
    ]
    assert plan.exit_code() == 3
