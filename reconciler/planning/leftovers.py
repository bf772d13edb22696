"""Temporaries that a killed run left (an apply, a hook, gitosis's own hook): the
gather program reports those whose maker is gone, and one op per server removes
them. Without it, a temporary whose file the next apply has no reason to write
again (it was already right, or another run wrote it) stays for ever."""

from __future__ import annotations

from typing import Any

from reconciler.planning.context import PlanContext
from reconciler.planning.model import Action, Note, Phase
from reconciler.server.ops import RemoveLeftovers
from reconciler.subjects import Fact, no_files, subject

SUBJECT = "leftovers"
SHOWN = 3  # names in the description; the op carries them all


def parse_leftovers(value: Any) -> tuple[str, ...]:
    """Relative to the home (reconciler.server.files.leftovers_fact)."""
    return tuple(str(path) for path in value or ())


LEFTOVERS = Fact("leftovers", parse_leftovers, "leftover temporaries")


# After the repositories whose files they are, in the same phase.
@subject(SUBJECT, order=10, converged=no_files, facts=(LEFTOVERS,))
def plan_leftovers(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    actions = []
    for name, facts in ctx.reachable().items():
        paths = facts.fact(LEFTOVERS)
        if not paths:
            continue
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
