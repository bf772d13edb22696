"""``reconcile apply``: change every server to match cluster.d/."""

from __future__ import annotations

import contextlib
from pathlib import Path

from rich.markup import escape

from reconciler.commands.common import (
    close_all,
    load_and_connect,
    plan_options,
    require_admin_checkout,
)
from reconciler.commands.output import (
    ConsoleReporter,
    print_errors,
    print_json,
    print_plan,
    stderr,
)
from reconciler.planning import Plan


def run(
    directory: Path,
    *,
    servers: list[str],
    yes: bool,
    json_output: bool,
    cron: bool,
    trust_new_host_keys: bool,
    replace_foreign: bool,
    prune: bool = False,
) -> int:
    from reconciler.apply import apply_cluster

    quiet = json_output or cron
    # In cron mode each change is one log line; nothing is printed when nothing changed.
    reporter = ConsoleReporter(quiet=json_output, progress=not quiet)

    def confirm(plan: Plan) -> bool:
        if not quiet:
            print_plan(plan)
        if yes or cron:
            return True
        import typer

        return typer.confirm("Apply these changes?", default=False)

    with contextlib.ExitStack() as stack:
        if cron:
            from reconciler.cron import cron_lock, fast_forward_checkout

            stack.enter_context(cron_lock(directory))
            line = fast_forward_checkout(directory)
            if line:
                reporter.info(line)
        desired, transports = load_and_connect(directory, servers, trust_new_host_keys)
        stack.callback(close_all, transports)
        require_admin_checkout(directory)
        try:
            outcome = apply_cluster(
                desired,
                transports,
                plan_options(servers, replace_foreign, prune),
                reporter,
                confirm=confirm,
            )
        finally:
            close_all(transports)
    final = outcome.final_plan or outcome.first_plan
    if json_output:
        print_json(
            {
                "format_version": 1,
                "plan": outcome.first_plan.to_json(),
                "results": [
                    {**r.action.to_json(), "ok": r.ok, "error": r.error} for r in outcome.results
                ],
                "final": final.to_json(),
                "exit_code": outcome.exit_code(),
            }
        )
        print_errors(final)
        return outcome.exit_code()
    if outcome.declined:
        stderr().print("Nothing changed.")
        return 1
    if not outcome.results:
        if not cron:
            print_plan(final)
        elif final.conflicts:
            print_plan(final, stderr())
        print_errors(final)
        return outcome.exit_code()
    for server, why in outcome.stopped.items():
        stderr().print(escape(f"error: {server}: {why}"))
    for result in outcome.failed:
        if outcome.stopped.get(result.action.server) == result.error:
            continue  # said once for the server above
        stderr().print(
            escape(f"error: {result.action.server}: {result.action.description}: {result.error}")
        )
    if final.actions or final.conflicts or final.errors:
        stderr().print("After apply:")
        print_plan(final, stderr())
        print_errors(final)
    elif not cron:
        reporter.out.print(
            f"Applied {len(outcome.results)} change(s); the cluster matches cluster.d/."
        )
    return outcome.exit_code()
