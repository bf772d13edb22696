"""Managed subjects that declare themselves: a planner module registers its planner,
its place in the plan, and the facts it reads, so that adding a subject means
writing its server module (``reconciler.server.subjects``) and its planner module,
and naming it nowhere else.

``Fact`` is one key of the gather program's answer with its parser (the JSON value,
None when the key is absent, to a frozen value) and the part of a saved plan's
fingerprint it belongs to (a refusal names the part that changed).
``parse_server_facts`` parses every registered fact into ``ServerFacts.subjects``,
which a planner reads with ``ServerFacts.fact(FACT)``, typed as the parser's result.

A subject also says what a converged server holds for it (``converged``: the files
an apply leaves, from the desired state alone); what its server module's readers
report on those files is what a converged server reports. The tests build their
converged servers, and simulate the file operations, from that, naming no subject.

The registry is filled by importing the planner modules: ``reconciler.planning``
imports every module of its package. Nothing here imports them at import time
(``reconciler.facts`` imports this module, and the planners import it);
``subjects`` and ``facts`` do, when first asked.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from reconciler.desired import Desired
    from reconciler.planning.context import PlanContext
    from reconciler.planning.model import Action, Note

    Planner = Callable[[PlanContext], tuple[list[Action], list[Note]]]
    # (desired state, server) -> path relative to the home -> what an apply leaves there
    Converged = Callable[[Desired, str], dict[str, "ManagedFile"]]

T = TypeVar("T")


@dataclass(frozen=True)
class ManagedFile:
    content: str  # written as UTF-8
    mode: int


@dataclass(frozen=True)
class Fact(Generic[T]):
    key: str  # in the gather program's answer (a server module's FACTS)
    parse: Callable[[Any], T]  # the key's JSON value (None: absent) -> a frozen value
    part: str  # of a saved plan's fingerprint


@dataclass(frozen=True)
class Subject:
    name: str  # Action.subject
    order: int  # among the actions of a phase and server (planning.model.SUBJECT_ORDER)
    plan: Planner
    converged: Converged
    facts: tuple[Fact[Any], ...] = ()


_SUBJECTS: dict[str, Subject] = {}
_ORDER: dict[str, int] = {}


def no_files(desired: Desired, server: str) -> dict[str, ManagedFile]:
    """A subject whose converged state is that nothing of it is left (leftovers)."""
    return {}


def subject(
    name: str, order: int, *, converged: Converged, facts: tuple[Fact[Any], ...] = ()
) -> Callable[[Planner], Planner]:
    """Register the decorated function as subject ``name``'s planner; ``converged``
    gives the files a converged server holds for it."""

    def register(plan: Planner) -> Planner:
        if name in _SUBJECTS:
            raise RuntimeError(f"subject {name!r} is registered twice")
        keys = {fact.key for known in _SUBJECTS.values() for fact in known.facts}
        for fact in facts:
            if fact.key in keys:
                raise RuntimeError(f"fact {fact.key!r} of subject {name!r} is registered twice")
        _SUBJECTS[name] = Subject(name, order, plan, converged, facts)
        _ORDER[name] = order
        return plan

    return register


def _load() -> None:
    importlib.import_module("reconciler.planning")


def subjects() -> tuple[Subject, ...]:
    """Every registered subject, in the order their modules were imported."""
    _load()
    return tuple(_SUBJECTS.values())


def facts() -> tuple[Fact[Any], ...]:
    _load()
    return tuple(fact for known in _SUBJECTS.values() for fact in known.facts)


def order(name: str) -> int | None:
    """A registered subject's order (None: not registered). Only asked once a plan
    exists, so its modules are imported."""
    return _ORDER.get(name)
