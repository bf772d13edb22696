"""Before anything else: the git user, the server library, and a gitosis.

A server reached as an admin (``user:`` names the git user) whose git user does not
exist gets it created. Every server gets the server library installed once in the
git user's home (``reconciler.server.library``): the replication hook's stubs run
it, so it comes first; one that is missing, of another version or not intact is
(re)installed. A git user with no gitosis at all (none installed by the reconciler,
no ``gitosis-serve`` on the PATH of sshd's forced commands, no admin repository
yet) also gets the library's gitosis runtime commands; gitosis-init then runs from
there.
"""

from __future__ import annotations

from reconciler.facts import ServerFacts
from reconciler.planning.context import PlanContext
from reconciler.planning.model import Action, Kind, Note, Phase
from reconciler.server.library import LIBRARY_DIR, RUNTIME_BIN, RUNTIME_DIR
from reconciler.server.ops import CreateGitUser
from reconciler.server_library import install_library_op, library_version

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
                (CreateGitUser(user),),
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
    version = library_version()
    for name, facts in ctx.reachable().items():
        change = _library_change(facts, version)
        if change is not None:
            kind, description = change
            action = Action(
                name,
                "library",
                kind,
                LIBRARY_DIR,
                description,
                Phase.BOOTSTRAP,
                (install_library_op(runtime=uses_runtime(facts)),),
            )
            actions.append(action)
    return actions, notes


def _library_change(facts: ServerFacts, version: str) -> tuple[Kind, str] | None:
    library = facts.library
    runtime = uses_runtime(facts)
    where = f"~/{LIBRARY_DIR}"
    if runtime:
        where = f"~/{LIBRARY_DIR} (the gitosis runtime's commands in ~/{RUNTIME_BIN})"
    if library.version is None:
        if runtime:
            return (
                "create",
                f"install the gitosis runtime and the server library {version} in {where}",
            )
        return "create", f"install the server library {version} in {where}"
    if library.version != version:
        return (
            "change",
            f"upgrade the server library in {where} from {library.version} to {version}",
        )
    if not library.intact:
        return (
            "change",
            f"reinstall the server library {version} in {where}: its files are not intact",
        )
    if runtime and facts.gitosis.runtime != version:
        old = facts.gitosis.runtime
        return "change", (
            f"install the gitosis runtime in ~/{RUNTIME_DIR}, running the server library {version}"
            if old is None
            else f"upgrade the gitosis runtime in ~/{RUNTIME_DIR} from {old} to {version}"
        )
    return None
