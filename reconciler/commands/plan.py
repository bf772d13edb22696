"""``reconcile plan``: what apply would change on each server."""

from __future__ import annotations

from pathlib import Path

from reconciler.commands.common import close_all, load_and_connect, plan_options
from reconciler.commands.output import (
    ConsoleReporter,
    print_errors,
    print_json,
    print_plan,
    print_replication,
)


def run(
    directory: Path,
    *,
    servers: list[str],
    json_output: bool,
    detailed_exitcode: bool,
    trust_new_host_keys: bool,
    replace_foreign: bool = False,
    prune: bool = False,
) -> int:
    from reconciler.apply import plan_cluster

    desired, transports = load_and_connect(directory, servers, trust_new_host_keys)
    try:
        reporter = ConsoleReporter(quiet=json_output)
        plan, _facts = plan_cluster(
            desired, transports, plan_options(servers, replace_foreign, prune), reporter
        )
    finally:
        close_all(transports)
    if json_output:
        print_json({**plan.to_json(), "replication": desired.quorum_summary()})
    else:
        print_replication(desired.quorum_summary())
        print_plan(plan)
    print_errors(plan)
    code = plan.exit_code()
    if detailed_exitcode:
        return code
    return code if code in (1, 3) else 0
