"""``reconcile plan``: what apply would change on each server; ``-out FILE`` saves it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.commands.common import close_all, load_and_start_gather, plan_options
from reconciler.errors import ReconcilerError

if TYPE_CHECKING:
    from reconciler.desired import Desired
    from reconciler.pipeline import Observed
    from reconciler.planning import Plan, PlanOptions


def run(
    directory: Path,
    *,
    servers: list[str],
    json_output: bool,
    detailed_exitcode: bool,
    trust_new_host_keys: bool,
    replace_foreign: bool = False,
    prune: bool = False,
    out: Path | None = None,
) -> int:
    desired, transports, started = load_and_start_gather(directory, servers, trust_new_host_keys)
    # Imported while the servers gather (rich's import is most of it).
    from reconciler.commands.output import (
        ConsoleReporter,
        print_errors,
        print_json,
        print_plan,
        print_replication,
    )
    from reconciler.pipeline import plan_cluster

    options = plan_options(servers, replace_foreign, prune)
    try:
        reporter = ConsoleReporter(quiet=json_output)
        plan, observed = plan_cluster(desired, transports, options, reporter, started)
    finally:
        close_all(transports)
    if json_output:
        print_json({**plan.to_json(with_ops=True), "replication": desired.quorum_summary()})
    else:
        print_replication(desired.quorum_summary())
        print_plan(plan)
    print_errors(plan)
    code = plan.exit_code()
    if out is not None:
        if plan.errors:
            raise ReconcilerError(
                f"the plan has {len(plan.errors)} error(s), so it was not saved to {out}"
            )
        _save(out, desired, observed, options, plan, quiet=json_output)
    if detailed_exitcode:
        return code
    return code if code in (1, 3) else 0


def _save(
    out: Path,
    desired: Desired,
    observed: Observed,
    options: PlanOptions,
    plan: Plan,
    *,
    quiet: bool,
) -> None:
    from reconciler import __version__
    from reconciler.commands.output import stderr, stdout
    from reconciler.saved_plan import (
        SavedOptions,
        SavedPlan,
        desired_identity,
        fingerprint_facts,
        write_saved_plan,
    )
    from reconciler.server_library import library_version

    saved = SavedPlan(
        plan=plan,
        options=SavedOptions(
            servers=options.only_servers,
            replace_foreign=options.replace_foreign,
            prune=options.prune,
            stamp=options.stamp,
            library=library_version(),
        ),
        desired=desired_identity(desired.root, observed.checkout),
        servers=fingerprint_facts(observed.facts, desired.servers),
        version=__version__,
    )
    write_saved_plan(out, saved)
    console = stderr() if quiet else stdout()
    console.print(f"Saved the plan to {out}; carry it out with: reconcile apply {out}")
