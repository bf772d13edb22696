"""The pure planner: desired state and facts in, a ``Plan`` out. No I/O here.

Every module of this package is imported here: those of the subjects that register
themselves (``reconciler.subjects``) are named nowhere else.
"""

from __future__ import annotations

import importlib
import pkgutil

from reconciler import subjects as registry
from reconciler.planning.access import plan_access
from reconciler.planning.admin import plan_admin
from reconciler.planning.bootstrap import plan_bootstrap
from reconciler.planning.context import PlanContext, PlanOptions
from reconciler.planning.hooks import plan_hooks, plan_transaction_hooks
from reconciler.planning.keys import plan_server_keys
from reconciler.planning.known_hosts import plan_known_hosts
from reconciler.planning.model import Action, Note, Phase, Plan
from reconciler.planning.refs import plan_refs
from reconciler.planning.remotes import plan_remotes
from reconciler.planning.repositories import plan_repositories
from reconciler.planning.repository_settings import plan_repository_settings
from reconciler.planning.settings import plan_settings
from reconciler.planning.ssh_config import plan_ssh_config
from reconciler.planning.template import plan_git_template

SUBJECTS = (
    plan_bootstrap,
    plan_server_keys,
    plan_admin,
    plan_access,
    plan_known_hosts,
    plan_ssh_config,
    plan_settings,
    plan_git_template,
    plan_repositories,
    plan_repository_settings,
    plan_remotes,
    plan_hooks,
    plan_transaction_hooks,
    plan_refs,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def make_plan(ctx: PlanContext) -> Plan:
    actions: list[Action] = []
    notes: list[Note] = []
    for name, error in ctx.facts.errors.items():
        if name in ctx.planned_servers():
            notes.append(Note(name, "server", name, "error", str(error)))
    for subject in (*SUBJECTS, *(known.plan for known in registry.subjects())):
        found_actions, found_notes = subject(ctx)
        actions += found_actions
        notes += found_notes
    return Plan(
        actions=tuple(sorted(actions, key=Action.sort_key)),
        notes=tuple(notes),
        servers=tuple(ctx.planned_servers()),
    )


__all__ = ["Action", "Note", "Phase", "Plan", "PlanContext", "PlanOptions", "make_plan"]
