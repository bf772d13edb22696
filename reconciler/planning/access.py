"""Access between the servers: can every server's key push to every peer as itself?

Replication pushes over ssh through each peer's gitosis, as ``git@<server>``. sshd
takes the first ``authorized_keys`` line holding a key, so a key listed under two
user names (the key file of a renamed server left in keydir/, a person's file
holding a server's key) lets the server in as whoever comes first, and gitosis
then denies it the mirrored repositories. The plan reports that instead of saying
all is well: one public key under two names in keydir/, and, from the
authorized_keys gathered on each peer, a server's key missing there or shadowed by
an earlier line for another user.
"""

from __future__ import annotations

import re

from reconciler.admin_checkout import key_blob, with_server_keys
from reconciler.desired.keys import KEY_TYPES
from reconciler.desired.render import key_file, mirror_members
from reconciler.planning.context import PlanContext
from reconciler.planning.model import ADMIN_CHECKOUT, Action, Note

# The forced-command lines gitosis writes (GITOSIS.md), with the user they serve.
_GITOSIS_LINE = re.compile(
    r'^command="(?:/[^ "]+/)?gitosis-serve ([^"]+)",no-port-forwarding,no-X11-forwarding,'
    r"no-agent-forwarding,no-pty (.*)$"
)


def _line_key(line: str) -> tuple[str | None, str | None]:
    """(the gitosis user the line serves or None for another line, its key blob)."""
    match = _GITOSIS_LINE.match(line)
    if match is not None:
        return match.group(1), key_blob(match.group(2))
    fields = line.split()
    for index, field in enumerate(fields[:-1]):
        # Past any options: the key is the field after its type.
        if field in KEY_TYPES or field.endswith(tuple(f",{t}" for t in KEY_TYPES)):
            return None, fields[index + 1]
    return None, None


def _short(blob: str) -> str:
    return f"{blob[:12]}…{blob[-8:]}" if len(blob) > 24 else blob


def _duplicate_keys(ctx: PlanContext) -> list[Note]:
    desired = with_server_keys(ctx.desired, ctx.facts)
    servers_by_user = {desired.server_user(name): name for name in desired.servers}
    holders: dict[str, list[str]] = {}
    for user in sorted(desired.users):
        for key in desired.users[user]:
            users = holders.setdefault(key_blob(key), [])
            if user not in users:
                users.append(user)
    notes = []
    for blob, users in holders.items():
        if len(users) < 2:
            continue

        def shown(user: str) -> str:
            where = key_file(user)
            if user in desired.inline_users:
                location = desired.locations.get(("users", user))
                where += f" (users: in {location})" if location else " (users: in cluster.d/)"
            elif user in servers_by_user:
                where += f" (server {servers_by_user[user]}'s key)"
            return where

        files = " and ".join(shown(user) for user in users)
        notes.append(
            Note(
                ADMIN_CHECKOUT,
                "access",
                "keydir",
                "conflict",
                f"{files} hold the same public key ({_short(blob)}): sshd lets that key in as "
                f"the first of {', '.join(users)} in authorized_keys only; remove all but one",
            )
        )
    return notes


def _admin_settled(ctx: PlanContext, server: str) -> bool:
    """The server's admin repository (hence its authorized_keys) is what the checkout
    renders, with nothing planned to change it."""
    checkout = ctx.checkout
    if checkout.files or checkout.uncommitted or checkout.removed:
        return False
    facts = ctx.facts.servers[server]
    return (
        facts.admin.exists
        and checkout.relations.get(server) == "same"
        and not facts.admin.post_update_pending
    )


def _peer_access(ctx: PlanContext) -> list[Note]:
    desired = with_server_keys(ctx.desired, ctx.facts)
    members = set(mirror_members(desired))
    notes = []
    for peer, peer_facts in ctx.reachable().items():
        if desired.servers[peer].peer_url.kind != "ssh" or not _admin_settled(ctx, peer):
            continue
        lines = [_line_key(line) for line in peer_facts.authorized_keys]
        for server, facts in ctx.facts.servers.items():
            if server == peer or server not in desired.servers or not facts.server_key:
                continue
            blob = key_blob(facts.server_key)
            user = desired.server_user(server)
            first = next((i for i, (_u, b) in enumerate(lines) if b == blob), None)
            if first is None:
                message = (
                    f"{server}'s key is not in {peer}'s ~/.ssh/authorized_keys although "
                    f"{peer}'s {desired.cluster.admin_repository} holds it, so {server} "
                    f"cannot replicate to {peer}; run gitosis's post-update hook on {peer} "
                    "or restore the file"
                )
            elif lines[first][0] == user:
                continue
            elif lines[first][0] is None:
                message = (
                    f"line {first + 1} of {peer}'s ~/.ssh/authorized_keys holds {server}'s key "
                    f"without gitosis's forced command, and sshd takes the first line for a "
                    f"key: {server} gets a shell on {peer} instead of gitosis, and cannot "
                    f"replicate to it; remove that line"
                )
            else:
                other = lines[first][0]
                outside = "" if other in members else ", who is not in the mirror group"
                message = (
                    f"line {first + 1} of {peer}'s ~/.ssh/authorized_keys gives {server}'s key "
                    f"to {other}, and sshd takes the first line for a key: {server} arrives "
                    f"on {peer} as {other}, not {user}{outside}, so gitosis refuses its "
                    "replication pushes; remove the other user's copy of the key from keydir/"
                )
            notes.append(Note(peer, "access", "authorized_keys", "conflict", message))
    return notes


def plan_access(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    return [], _duplicate_keys(ctx) + _peer_access(ctx)
