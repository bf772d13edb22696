"""Repositories: every mirrored repository exists, bare, on every server.

A missing one is cloned (``git clone --mirror``) from a server that has it, or
initialised empty where none has it. Repositories not in cluster.d/ are listed as
unmanaged and never touched.
"""

from __future__ import annotations

from reconciler.planning.context import PlanContext, repository_url
from reconciler.planning.model import Action, Note, Phase
from reconciler.server.ops import CloneMirror, InitBare, RemoveFile, RemoveRemote


def source_for(ctx: PlanContext, repository: str, target: str) -> str | None:
    """The first other server (in cluster.d/ order) that holds ``repository``."""
    for name in ctx.desired.servers:
        facts = ctx.facts.servers.get(name)
        if name != target and facts is not None and repository in facts.repositories:
            return name
    return None


def will_exist(ctx: PlanContext, server: str, repository: str) -> bool:
    facts = ctx.facts.servers.get(server)
    return facts is not None and (
        repository in facts.repositories or repository == ctx.desired.cluster.admin_repository
    )


def plan_repositories(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    actions: list[Action] = []
    notes: list[Note] = []
    mirrored = ctx.desired.mirrored_repositories()
    admin = ctx.desired.cluster.admin_repository
    for name, facts in ctx.reachable().items():
        for repository in mirrored:
            if repository == admin or repository in facts.repositories:
                continue
            path = ctx.repository_path(name, repository)
            source = source_for(ctx, repository, name)
            if source is None:
                description = f"create empty repository {repository}"
                op: InitBare | CloneMirror = InitBare(path)
            else:
                url = repository_url(ctx.desired.servers[source], repository)
                description = f"clone repository {repository} from {source}"
                op = CloneMirror(path, url)
            actions.append(
                Action(
                    name,
                    "repository",
                    "create",
                    repository,
                    description,
                    Phase.CONFIGURATION,
                    (op,),
                )
            )
        unmanaged = sorted(set(facts.repositories) - set(mirrored))
        for repository in unmanaged:
            notes.append(
                Note(name, "repository", repository, "unmanaged", "not in cluster.d/; left alone")
            )
            if ctx.options.prune:
                actions += prune_unmanaged(ctx, name, repository)
    return actions, notes


def prune_unmanaged(ctx: PlanContext, server: str, repository: str) -> list[Action]:
    """With --prune: take the reconciler's own hook and remotes out of a repository
    dropped from cluster.d/. The repository itself, its refs and anything the
    reconciler did not write stay."""
    facts = ctx.facts.servers[server].repositories[repository]
    path = ctx.repository_path(server, repository)
    actions = []
    hook = facts.hook
    if hook is not None and hook.managed and not hook.symlink:
        actions.append(
            Action(
                server,
                "hook",
                "remove",
                f"{repository} post-receive",
                f"{repository}: remove the replication hook (not in cluster.d/)",
                Phase.CONFIGURATION,
                (RemoveFile(f"{path}/hooks/post-receive", expect_sha256=hook.sha256),),
            )
        )
    for remote, remote_facts in sorted(facts.remotes.items()):
        if remote_facts.managed:
            actions.append(
                Action(
                    server,
                    "remote",
                    "remove",
                    f"{repository} remote {remote}",
                    f"{repository}: remove remote {remote} (not in cluster.d/)",
                    Phase.CONFIGURATION,
                    (RemoveRemote(path, remote),),
                )
            )
    return actions
