"""``reconcile apply``: change every server to match cluster.d/."""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from reconciler.commands.common import (
    close_all,
    load_and_connect,
    plan_options,
    require_admin_checkout,
)
from reconciler.commands.output import (
    ConsoleReporter,
    LogReporter,
    print_errors,
    print_json,
    print_plan,
    stderr,
    stdout,
)
from reconciler.errors import ReconcilerError
from reconciler.logline import LogFormat
from reconciler.planning import Plan

if TYPE_CHECKING:
    from reconciler.apply import Outcome
    from reconciler.commands.textfile import RunClock
    from reconciler.desired import Desired


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
    textfile: Path | None = None,
    log_format: LogFormat = "logfmt",
    plan_file: Path | None = None,
) -> int:
    from reconciler.commands.textfile import RunClock, check_directory

    clock = RunClock()
    if textfile is not None:
        check_directory(textfile)
    if plan_file is not None and cron:
        raise ReconcilerError(
            f"apply --cron takes no plan file ({plan_file}): it fast-forwards the checkout "
            "first, which a saved plan forbids; run apply --cron alone, or apply FILE alone"
        )
    log = LogReporter(log_format) if cron and not json_output else None
    desired: Desired | None = None
    try:
        if plan_file is not None:
            desired, outcome = _apply_saved(
                directory,
                plan_file,
                servers=servers,
                json_output=json_output,
                trust_new_host_keys=trust_new_host_keys,
                replace_foreign=replace_foreign,
                prune=prune,
            )
        else:
            desired, outcome = _apply(
                directory,
                servers=servers,
                yes=yes,
                json_output=json_output,
                cron=cron,
                trust_new_host_keys=trust_new_host_keys,
                replace_foreign=replace_foreign,
                prune=prune,
                log=log,
            )
    except ReconcilerError as exc:
        if textfile is not None:
            _write_metrics(textfile, clock, exc.exit_code, desired, None)
        if log is not None:
            # The same one sentence, as a line log shippers can index.
            log.error(str(exc))
            return exc.exit_code
        raise
    code = _report(outcome, json_output=json_output, cron=cron, log=log)
    if textfile is not None:
        _write_metrics(textfile, clock, code, desired, outcome)
    return code


def _apply(
    directory: Path,
    *,
    servers: list[str],
    yes: bool,
    json_output: bool,
    cron: bool,
    trust_new_host_keys: bool,
    replace_foreign: bool,
    prune: bool,
    log: LogReporter | None,
) -> tuple[Desired, Outcome]:
    from reconciler.apply import apply_cluster

    quiet = json_output or cron
    # In cron mode each change is one log line; nothing is printed when nothing changed.
    reporter = log or ConsoleReporter(quiet=json_output, progress=not quiet)

    def confirm(plan: Plan) -> bool:
        if not quiet:
            print_plan(plan)
        if yes or cron:
            return True
        import typer

        return typer.confirm("Apply these changes?", default=False)

    from reconciler.cron import catch_up_from_servers, cron_lock, fast_forward_checkout

    def report(lines: list[str], warnings: list[str]) -> None:
        for line in lines:
            reporter.info(line)
        for warning in warnings:
            reporter.warning(warning)

    with contextlib.ExitStack() as stack:
        if cron:
            stack.enter_context(cron_lock(directory))
            report(*fast_forward_checkout(directory))
        desired, transports = load_and_connect(directory, servers, trust_new_host_keys)
        stack.callback(close_all, transports)
        require_admin_checkout(directory)
        lines, warnings = catch_up_from_servers(desired, transports)
        report(lines, warnings)
        if lines:
            # The commit pushed to a server by hand may change cluster.d/ itself.
            close_all(transports)
            desired, transports = load_and_connect(directory, servers, trust_new_host_keys)
            stack.callback(close_all, transports)
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
    return desired, outcome


def _apply_saved(
    directory: Path,
    plan_file: Path,
    *,
    servers: list[str],
    json_output: bool,
    trust_new_host_keys: bool,
    replace_foreign: bool,
    prune: bool,
) -> tuple[Desired, Outcome]:
    """``apply FILE``: the plan was reviewed when it was made, so nothing is asked."""
    from reconciler.apply import apply_saved_plan
    from reconciler.saved_plan import read_saved_plan

    saved = read_saved_plan(plan_file)
    recorded = saved.options
    given = [
        f"--server {' '.join(servers)}" if servers and tuple(servers) != recorded.servers else "",
        "--replace-foreign" if replace_foreign and not recorded.replace_foreign else "",
        "--prune" if prune and not recorded.prune else "",
    ]
    if any(given):
        shown = " ".join(g for g in given if g)
        made = " ".join(f"--server {s}" for s in recorded.servers) or "no --server"
        raise ReconcilerError(
            f"{plan_file} was made with {made}"
            f"{', --replace-foreign' if recorded.replace_foreign else ''}"
            f"{', --prune' if recorded.prune else ''}; apply carries it out as it was made, "
            f"so {shown} cannot change it: run plan again with the options you want"
        )
    reporter = ConsoleReporter(quiet=json_output, progress=not json_output)
    desired, transports = load_and_connect(directory, list(recorded.servers), trust_new_host_keys)
    try:
        require_admin_checkout(directory)
        outcome = apply_saved_plan(desired, transports, saved, plan_file, reporter)
    finally:
        close_all(transports)
    return desired, outcome


def _report(outcome: Outcome, *, json_output: bool, cron: bool, log: LogReporter | None) -> int:
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
                "unplanned": [a.to_json() for a in outcome.unplanned],
                "exit_code": outcome.exit_code(),
            }
        )
        print_errors(final)
        return outcome.exit_code()
    if log is not None:
        # Each change and each failure was logged as it happened; what is left follows.
        log.remaining(final)
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
    if outcome.unplanned:
        stderr().print(
            f"Not carried out: {len(outcome.unplanned)} change(s) found during apply that "
            "the saved plan does not hold (run plan again to review them):"
        )
        for action in sorted(outcome.unplanned, key=lambda a: a.sort_key()):
            stderr().print(escape(f"  {action.server}: {action.symbol} {action.description}"))
    if final.actions or final.conflicts or final.errors:
        stderr().print("After apply:")
        print_plan(final, stderr())
        print_errors(final)
    elif not cron:
        stdout().print(f"Applied {len(outcome.results)} change(s); the cluster matches cluster.d/.")
    return outcome.exit_code()


def _write_metrics(
    directory: Path, clock: RunClock, code: int, desired: Desired | None, outcome: Outcome | None
) -> None:
    from reconciler.commands.textfile import read_previous, write_textfile

    report = None
    conflicts: Counter[str] = Counter()
    applied = failed = 0
    if outcome is not None and desired is not None and outcome.facts is not None:
        from reconciler.refs import RefReport
        from reconciler.status import build_status

        report = build_status(desired, outcome.facts, outcome.refs or RefReport())
        final = outcome.final_plan or outcome.first_plan
        conflicts.update(note.server for note in final.conflicts)
        failed = len(outcome.failed)
        applied = len(outcome.results) - failed
    run = clock.finish(
        code, read_previous(directory), applied=applied, failed=failed, conflicts=conflicts
    )
    write_textfile(directory, report, run)
