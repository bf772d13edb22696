"""Server keys: every server's git user has ``~/.ssh/id_ed25519``, made on that server."""

from __future__ import annotations

from reconciler.planning.context import PlanContext
from reconciler.planning.model import Action, Note, Phase


def plan_server_keys(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    actions: list[Action] = []
    notes: list[Note] = []
    for name, facts in ctx.reachable().items():
        user = ctx.desired.server_user(name)
        if facts.server_key:
            notes.append(
                Note(name, "server-key", "~/.ssh/id_ed25519", "info", "server key present")
            )
            continue
        if facts.server_key_private:
            notes.append(
                Note(
                    name,
                    "server-key",
                    "~/.ssh/id_ed25519",
                    "conflict",
                    "~/.ssh/id_ed25519 exists without its .pub file; recreate the public key "
                    "with 'ssh-keygen -y' on the server",
                )
            )
            continue
        actions.append(
            Action(
                server=name,
                subject="server-key",
                kind="create",
                target="~/.ssh/id_ed25519",
                description=f"generate the server key ~/.ssh/id_ed25519 ({user})",
                phase=Phase.SERVER_KEYS,
                ops=({"op": "keygen", "comment": user},),
            )
        )
    return actions, notes
