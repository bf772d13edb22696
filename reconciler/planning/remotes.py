"""Remotes: in each mirrored repository, one remote per peer, named after it.

The reconciler marks its remotes with ``remote.<peer>.reconcilerManaged = true``.
A remote with a peer's name that it did not write is adopted when its URL is
already right, and otherwise reported, never replaced without --replace-foreign.
Remotes of servers dropped from cluster.d/ go; foreign remotes stay and are listed.
The admin repository has no peer remotes: it reaches the servers only from the
admin checkout (reconcile apply), never server to server, so the reconciler's
remotes there go too.
"""

from __future__ import annotations

from reconciler.facts import RemoteFacts
from reconciler.planning.context import PlanContext, repository_url
from reconciler.planning.model import Action, Note, Phase
from reconciler.planning.repositories import will_exist


def _clean(remote: RemoteFacts, url: str) -> bool:
    return remote.url == url and not remote.fetch and not remote.pushurl and not remote.mirror


def plan_remotes(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    actions: list[Action] = []
    notes: list[Note] = []
    admin = ctx.desired.cluster.admin_repository
    for name, facts in ctx.reachable().items():
        servers = ctx.peers(name)
        for repository in ctx.desired.mirrored_repositories():
            peers = [] if repository == admin else servers
            path = ctx.repository_path(name, repository)
            existing = facts.repositories.get(repository)
            remotes = existing.remotes if existing else {}
            if existing is None and not will_exist(ctx, name, repository):
                # Created in this run (by clone or init): its remotes are all new.
                remotes = {}
            for peer in peers:
                url = repository_url(ctx.desired.servers[peer], repository)
                remote = remotes.get(peer)
                if remote is not None and remote.managed and _clean(remote, url):
                    continue  # the common case, decided before building anything
                op = {"op": "set_remote", "repo": path, "name": peer, "url": url}
                target = f"{repository} remote {peer}"
                if remote is None:
                    description = f"{repository}: add remote {peer} -> {url}"
                    actions.append(
                        Action(
                            name,
                            "remote",
                            "create",
                            target,
                            description,
                            Phase.CONFIGURATION,
                            (op,),
                        )
                    )
                elif remote.managed or remote.url == url:
                    verb = "set remote" if remote.managed else "adopt remote"
                    description = f"{repository}: {verb} {peer} -> {url}"
                    actions.append(
                        Action(
                            name,
                            "remote",
                            "change",
                            target,
                            description,
                            Phase.CONFIGURATION,
                            (op,),
                        )
                    )
                elif ctx.options.replace_foreign:
                    description = (
                        f"{repository}: replace foreign remote {peer} ({remote.url}) -> {url}"
                    )
                    actions.append(
                        Action(
                            name,
                            "remote",
                            "change",
                            target,
                            description,
                            Phase.CONFIGURATION,
                            ({**op, "replace": True},),
                        )
                    )
                else:
                    notes.append(
                        Note(
                            name,
                            "remote",
                            target,
                            "conflict",
                            f"{repository}: remote {peer} points to {remote.url}, not {url}, and "
                            "was not written by reconcile; fix it or apply with --replace-foreign",
                        )
                    )
            for remote_name, remote in sorted(remotes.items()):
                if remote_name in peers:
                    continue
                target = f"{repository} remote {remote_name}"
                if remote.managed:
                    why = (
                        "the admin repository reaches it only through reconcile apply"
                        if remote_name in servers
                        else "server left the cluster"
                    )
                    actions.append(
                        Action(
                            name,
                            "remote",
                            "remove",
                            target,
                            f"{repository}: remove remote {remote_name} ({why})",
                            Phase.CONFIGURATION,
                            ({"op": "remove_remote", "repo": path, "name": remote_name},),
                        )
                    )
                else:
                    notes.append(
                        Note(
                            name,
                            "remote",
                            target,
                            "warning",
                            f"{repository}: foreign remote {remote_name} ({remote.url}) left alone",
                        )
                    )
    return actions, notes
