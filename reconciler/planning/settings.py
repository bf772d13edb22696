"""The replication hook's settings file, one per server under the repositories directory."""

from __future__ import annotations

from reconciler.planning.context import SETTINGS_PATH, PlanContext, settings_text
from reconciler.planning.model import Action, Note, Phase
from reconciler.server.ops import WriteFile


def plan_settings(ctx: PlanContext) -> tuple[list[Action], list[Note]]:
    actions: list[Action] = []
    for name, facts in ctx.reachable().items():
        wanted = settings_text(ctx.desired, name)
        if facts.settings_text == wanted:
            continue
        path = f"{ctx.desired.servers[name].repositories}/{SETTINGS_PATH}"
        actions.append(
            Action(
                server=name,
                subject="settings",
                kind="create" if facts.settings_text is None else "change",
                target=path,
                description=f"replication settings {path}",
                phase=Phase.CONFIGURATION,
                ops=(WriteFile(path, wanted, mode=0o644),),
            )
        )
    return actions, []
