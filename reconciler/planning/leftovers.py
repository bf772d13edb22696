"""Temporaries that a killed run left (an apply, a hook, gitosis's own hook): the
gather program reports those whose maker is gone, and one op per server removes
them. Without it, a temporary whose file the next apply has no reason to write
again (it was already right, or another run wrote it) stays for ever."""

from __future__ import annotations

from reconciler.planning.context import PlanContext
from reconciler.planning.model import Action, Note, Phase
from reconciler.server.ops import RemoveLeftovers

SUBJECT = "leftovers"
SHOWN = 3  # names in the description; the op carries them all


def plan_leftovers(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    actions = []
    for name, facts in ctx.reachable().items():
        if not facts.leftovers:
            continue
        paths = facts.leftovers
        shown = ", ".join(f"~/{p}" for p in paths[:SHOWN])
        more = f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
        count = f"{len(paths)} temporar{'y' if len(paths) == 1 else 'ies'}"
        actions.append(
            Action(
                name,
                SUBJECT,
                "remove",
                "temporaries",
                f"remove {count} a killed run left: {shown}{more}",
                Phase.CONFIGURATION,
                (RemoveLeftovers(tuple(paths)),),
            )
        )
    return actions, []
