"""`reconcile validate`: check cluster.d/ offline and that the rendered files are fresh."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from reconciler.errors import ConfigErrors, Location, ReconcilerError


def print_problems(console: Console, errors: list[ReconcilerError]) -> None:
    for error in errors:
        console.print(str(error), markup=False, highlight=False)
    count = len(errors)
    console.print(
        f"{count} problem{'s' if count != 1 else ''} found; nothing was changed.",
        markup=False,
        highlight=False,
    )


def run(directory: Path) -> int:
    from reconciler.desired import load
    from reconciler.desired.render import stale_files

    out = Console(soft_wrap=True, highlight=False)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        desired = load(directory)
    except ConfigErrors as exc:
        print_problems(err, exc.errors)
        return 1
    stale = stale_files(desired, directory)
    if stale:
        print_problems(
            err,
            [
                ReconcilerError(
                    f"this rendered file {item.reason}; "
                    "run 'reconcile render' and commit the result",
                    Location(str(directory / item.path)),
                )
                for item in stale
            ],
        )
        return 1
    out.print(
        f"cluster.d/ is valid ({len(desired.servers)} servers, "
        f"{len(desired.repositories)} repositories, {len(desired.groups)} groups, "
        f"{len(desired.users)} users) and gitosis.conf and keydir/ are up to date.",
        markup=False,
    )
    return 0
