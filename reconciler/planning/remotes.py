"""Remotes: in each mirrored repository, one remote per peer, named after it.

The reconciler marks its remotes with ``remote.<peer>.reconcilerManaged = true``.
A remote with a peer's name that it did not write is adopted when its URL is
already right, and otherwise reported, never replaced without --replace-foreign.
A foreign remote under another name whose URL points at a peer's copy of the
repository (the recipe's ``mirror-server``, or ``origin`` left by ``git clone
--mirror``) is taken over with --replace-foreign: it becomes the peer's remote,
normalised like the others (a second one to the same peer goes). Remotes of
servers dropped from cluster.d/ go; any other foreign remote stays and is listed
with the command that would remove it.
The admin repository has no peer remotes: it reaches the servers only from the
admin checkout (reconcile apply), never server to server, so the reconciler's
remotes there go too (and, with --replace-foreign, foreign ones pointing at a peer).
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import replace
from urllib.parse import urlsplit

from reconciler.desired.model import Server, ServerURL
from reconciler.facts import RemoteFacts
from reconciler.planning.context import PlanContext, repository_base_url
from reconciler.planning.model import Action, Note, Phase
from reconciler.planning.repositories import will_exist
from reconciler.server.ops import RemoveRemote, SetRemote


def _clean(remote: RemoteFacts, url: str) -> bool:
    return remote.url == url and not remote.fetch and not remote.pushurl and not remote.mirror


# git's scp-like address: [user@]host:path, with a colon before any slash.
_SCP_LIKE = re.compile(r"(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]/]+\]|[^:/\[\]]+):(?P<path>.*)")


def _ssh_parts(url: str) -> tuple[str | None, str, int, str] | None:
    """(user, host, port, path) of an ssh URL or an scp-like address; None otherwise."""
    if url.startswith(("ssh://", "git+ssh://", "ssh+git://")):
        try:
            parts = urlsplit(url)
            port = parts.port or 22
        except ValueError:
            return None
        if not parts.hostname:
            return None
        return parts.username, parts.hostname.lower(), port, parts.path
    if "://" in url:
        return None
    match = _SCP_LIKE.fullmatch(url)
    if match is None:
        return None
    host = match.group("host").strip("[]").lower()
    return match.group("user"), host, 22, match.group("path")


def _names_repository(path: str, server: Server, repository: str) -> bool:
    """Whether a path on ``server`` (as gitosis-serve or a shell would take it) is
    ``repository``: leading slashes, ``~/`` and the repositories directory aside."""
    path = path.strip("/")
    if path.startswith("~/"):
        path = path[2:].lstrip("/")
    base = server.repositories.strip("/") + "/"
    if path.startswith(base):
        path = path[len(base) :]
    path = path.rstrip("/")
    if path.endswith(".git"):
        path = path[: -len(".git")]
    return path == repository


def _same_address(parts: tuple[str | None, str, int, str], url: ServerURL) -> bool:
    user, host, port, _path = parts
    if url.kind != "ssh" or url.host is None or host != url.host.lower():
        return False
    if port != (url.port or 22):
        return False
    return user is None or url.user is None or user == url.user


def peer_of(ctx: PlanContext, server: str, repository: str, url: str | None) -> str | None:
    """The peer whose copy of ``repository`` a remote URL on ``server`` points at."""
    if not url:
        return None
    parts = _ssh_parts(url)
    for peer in ctx.peers(server):
        spec = ctx.desired.servers[peer]
        if parts is not None:
            if any(_same_address(parts, u) for u in (spec.peer_url, spec.url)) and (
                _names_repository(parts[3], spec, repository)
            ):
                return peer
            continue
        path = url[len("file://") :] if url.startswith("file://") else url
        for address in (spec.peer_url, spec.url):
            if address.kind == "local" and address.path and posixpath.isabs(path):
                home = posixpath.normpath(address.path)
                here = posixpath.normpath(path)
                if here.startswith(home + "/") and _names_repository(
                    here[len(home) :], spec, repository
                ):
                    return peer
    return None


def removal_command(ctx: PlanContext, server: str, repository: str, remote: str) -> str:
    """The command that removes a remote, as the git user on ``server`` would type it."""
    facts = ctx.facts.servers.get(server)
    home = facts.home if facts else "~"
    git_dir = f"{home}/{ctx.repository_path(server, repository)}"
    # `git remote remove` deletes only remote-tracking refs under refs/remotes/;
    # it leaves a mirror's refs/heads/ and refs/tags/ alone.
    return shlex.join(["git", "--git-dir", git_dir, "remote", "remove", remote])


def plan_remotes(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    actions: list[Action] = []
    notes: list[Note] = []
    admin = ctx.desired.cluster.admin_repository
    for name, facts in ctx.reachable().items():
        servers = ctx.peers(name)
        # Each peer's URL up to the repository's name, worked out once per peer.
        bases = {peer: repository_base_url(ctx.desired.servers[peer]) for peer in servers}
        for repository in ctx.desired.mirrored_repositories():
            peers = [] if repository == admin else servers
            existing = facts.repositories.get(repository)
            remotes = existing.remotes if existing else {}
            if existing is None and not will_exist(ctx, name, repository):
                # Created in this run (by clone or init): its remotes are all new.
                remotes = {}
            if len(remotes) == len(peers):
                # The common case (the peers' remotes, all in line), decided first; a
                # plain loop, as this runs for every repository on every server.
                for peer in peers:
                    remote = remotes.get(peer)
                    if (
                        remote is None
                        or not remote.managed
                        or remote.url != f"{bases[peer]}/{repository}.git"
                        or remote.fetch
                        or remote.pushurl
                        or remote.mirror
                    ):
                        break
                else:
                    continue
            path = ctx.repository_path(name, repository)
            # Foreign remotes under other names that point at a peer: taken over
            # with --replace-foreign when the peer has no remote of its own name.
            to_peer = {
                remote_name: found
                for remote_name, remote in sorted(remotes.items())
                if remote_name not in peers
                and not remote.managed
                and (found := peer_of(ctx, name, repository, remote.url)) is not None
            }
            taken: dict[str, str] = {}  # peer -> the foreign remote that becomes its remote
            if ctx.options.replace_foreign:
                for remote_name, peer in to_peer.items():
                    if peer not in remotes and peer not in taken:
                        taken[peer] = remote_name
            for peer in peers:
                url = f"{bases[peer]}/{repository}.git"
                remote = remotes.get(peer)
                if remote is not None and remote.managed and _clean(remote, url):
                    continue  # the common case, decided before building anything
                op = SetRemote(path, peer, url)
                target = f"{repository} remote {peer}"
                if remote is None and peer in taken:
                    old = taken[peer]
                    description = (
                        f"{repository}: take over remote {old} ({remotes[old].url}) as {peer} "
                        f"-> {url}"
                    )
                    actions.append(
                        Action(
                            name,
                            "remote",
                            "change",
                            target,
                            description,
                            Phase.CONFIGURATION,
                            (op, RemoveRemote(path, old)),
                        )
                    )
                elif remote is None:
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
                            (replace(op, replace=True),),
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
                if remote_name in peers or remote_name in taken.values():
                    continue
                target = f"{repository} remote {remote_name}"
                points_at = to_peer.get(remote_name)
                if points_at is not None and ctx.options.replace_foreign:
                    actions.append(
                        Action(
                            name,
                            "remote",
                            "remove",
                            target,
                            f"{repository}: remove foreign remote {remote_name} ({remote.url}), "
                            + (
                                "a remote to a peer: the admin repository reaches it only "
                                "through reconcile apply"
                                if repository == admin
                                else f"a second remote to {points_at} beside remote {points_at}"
                            ),
                            Phase.CONFIGURATION,
                            (RemoveRemote(path, remote_name),),
                        )
                    )
                elif points_at is not None:
                    notes.append(
                        Note(
                            name,
                            "remote",
                            target,
                            "warning",
                            f"{repository}: foreign remote {remote_name} ({remote.url}) points at "
                            + (
                                f"{points_at}; apply with --replace-foreign to remove it (the "
                                "admin repository reaches the servers only through reconcile "
                                "apply)"
                                if repository == admin
                                else f"{points_at}; apply with --replace-foreign to take it over "
                                f"as remote {points_at}"
                            ),
                        )
                    )
                elif remote.managed:
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
                            (RemoveRemote(path, remote_name),),
                        )
                    )
                else:
                    notes.append(
                        Note(
                            name,
                            "remote",
                            target,
                            "warning",
                            f"{repository}: foreign remote {remote_name} ({remote.url}) left "
                            f"alone; to remove it, run as the git user on {name}: "
                            f"{removal_command(ctx, name, repository, remote_name)}",
                        )
                    )
    return actions, notes
