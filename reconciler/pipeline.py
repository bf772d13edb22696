"""The plan pipeline, one line per phase: what ``plan``, ``apply`` and ``status`` run.

``observe`` reads everything the planner needs in one pass (one gather program per
server, the operator's admin checkout, and the refs of the repositories whose
digests differ) and returns it as one value; ``plan_cluster`` feeds that value to
the pure planner. Nothing the planner reads is optional: a planner never has to
guess whether a missing input means "nothing to do" or "not gathered".
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass

from reconciler.admin_checkout import CheckoutFacts, gather_checkout
from reconciler.desired import Desired
from reconciler.facts import Facts, ServerFacts
from reconciler.gather import gather_facts
from reconciler.planning import Plan, PlanContext, PlanOptions, make_plan
from reconciler.refs import RefReport, gather_ref_report
from reconciler.report import Reporter
from reconciler.transport import Transport


@dataclass(frozen=True)
class Observed:
    """What the cluster and the admin checkout are like now: the planner's whole input
    besides the desired state and the options."""

    facts: Facts  # every server's facts, or why it could not be read
    checkout: CheckoutFacts  # the operator's admin checkout against the servers' admin heads
    refs: RefReport  # refs that differ between servers, classified

    def context(self, desired: Desired, options: PlanOptions) -> PlanContext:
        return PlanContext(desired, self.facts, self.checkout, options, self.refs)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic collector off while the facts are built and planned over.

    Decoding 3 x 10,000 repositories allocates about a million objects, none of
    them in cycles; the collector would walk the growing heap again and again (about
    a tenth of a plan's CPU at that size). Turned on again, it would first walk all
    of the objects made meanwhile, as young ones, twice: freeze and unfreeze put them
    straight into the oldest generation instead (documented behaviour), where the
    next full collection, if one comes, still finds any cycle among them, so memory
    stays as it was.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.freeze()
            gc.unfreeze()
            gc.enable()


def observe(
    desired: Desired,
    transports: dict[str, Transport],
    reporter: Reporter | None = None,
    started: Mapping[str, Future[ServerFacts]] | None = None,
) -> Observed:
    """``started``: the servers' gathers, if already under way (``EarlyGather``)."""
    with collector_paused():
        # One program per server, in parallel.
        facts = gather_facts(desired, transports, reporter, started=started)
        checkout = gather_checkout(desired, facts)  # the operator's side: no round trip
        refs = gather_ref_report(desired, facts, {n: transports[n] for n in facts.servers})
    return Observed(facts, checkout, refs)


def plan_cluster(
    desired: Desired,
    transports: dict[str, Transport],
    options: PlanOptions,
    reporter: Reporter | None = None,
    started: Mapping[str, Future[ServerFacts]] | None = None,
) -> tuple[Plan, Observed]:
    observed = observe(desired, transports, reporter, started)
    with collector_paused():
        return make_plan(observed.context(desired, options)), observed
