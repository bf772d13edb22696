"""A bare server: the git user and a gitosis for it, before anything else.

A server reached as an admin (``user:`` names the git user) whose git user does not
exist gets it created. A git user with no gitosis at all (none installed by the
reconciler, no ``gitosis-serve`` on the PATH of sshd's forced commands, no admin
repository yet) gets the project's stdlib-only runtime installed in its home;
gitosis-init then runs from there. A runtime the reconciler installed earlier is
upgraded when this version's differs.
"""

from __future__ import annotations

from reconciler.facts import ServerFacts
from reconciler.gitosis_runtime import RUNTIME_BIN, RUNTIME_DIR, install_runtime_op, runtime_version
from reconciler.planning.context import PlanContext
from reconciler.planning.model import Action, Kind, Note, Phase

# Actions of this subject run as root (or through sudo), not as the git user.
ADMIN_SUBJECT = "bootstrap"


def uses_runtime(facts: ServerFacts) -> bool:
    """The server is (or is about to be) served by the runtime the reconciler installs."""
    gitosis = facts.gitosis
    return gitosis.runtime is not None or (not facts.admin.exists and not gitosis.on_path)


def init_command(facts: ServerFacts) -> str | None:
    """The gitosis-init to run on this server: the installed runtime's, or PATH's."""
    return f"{RUNTIME_BIN}/gitosis-init" if uses_runtime(facts) else None


def plan_bootstrap(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    actions: list[Action] = []
    notes: list[Note] = []
    for name in ctx.planned_servers():
        user = ctx.facts.missing_git_users.get(name)
        if user is None:
            continue
        actions.append(
            Action(
                name,
                ADMIN_SUBJECT,
                "create",
                user,
                f"create the git user {user} (home, shell /bin/sh, no password)",
                Phase.BOOTSTRAP,
                ({"op": "create_git_user", "user": user},),
            )
        )
        notes.append(
            Note(
                name,
                ADMIN_SUBJECT,
                user,
                "info",
                f"then, planned once {user} exists: the gitosis runtime (unless a "
                "gitosis-serve is on its PATH), gitosis-init with the admin key, the "
                "server key, the admin commit, repositories, remotes, hooks and refs",
            )
        )
    version = runtime_version()
    for name, facts in ctx.reachable().items():
        if not uses_runtime(facts) or facts.gitosis.runtime == version:
            continue
        kind: Kind
        if facts.gitosis.runtime is None:
            kind, description = "create", f"install the gitosis runtime in ~/{RUNTIME_DIR}"
        else:
            kind = "change"
            description = (
                f"upgrade the gitosis runtime in ~/{RUNTIME_DIR} "
                f"from {facts.gitosis.runtime} to {version}"
            )
        actions.append(
            Action(
                name,
                "gitosis",
                kind,
                RUNTIME_DIR,
                description,
                Phase.BOOTSTRAP,
                (install_runtime_op(),),
            )
        )
    return actions, notes
