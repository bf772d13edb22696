"""`reconcile validate`: check cluster.d/ offline and that the rendered files are fresh."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from reconciler.errors import ConfigErrors, Location, ReconcilerError

if TYPE_CHECKING:
    from reconciler.desired import Desired

# Plain text, no markup: written straight to the streams, without importing rich
# (validate runs as a pre-push hook; its start-up time is felt on every push).


def print_problems(stream: TextIO, errors: list[ReconcilerError]) -> None:
    for error in errors:
        stream.write(f"{error}\n")
    count = len(errors)
    stream.write(f"{count} problem{'s' if count != 1 else ''} found; nothing was changed.\n")


def load_or_report(directory: Path, err: TextIO) -> Desired | None:
    """cluster.d/ loaded, or None once every problem in it is printed to ``err``."""
    from reconciler.desired import load

    try:
        return load(directory)
    except ConfigErrors as exc:
        print_problems(err, exc.errors)
        return None


def run(directory: Path) -> int:
    from reconciler.desired.render import stale_files

    out = sys.stdout
    err = sys.stderr
    desired = load_or_report(directory, err)
    if desired is None:
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
    out.write(
        f"cluster.d/ is valid ({len(desired.servers)} servers, "
        f"{len(desired.repositories)} repositories, {len(desired.groups)} groups, "
        f"{len(desired.users)} users) and gitosis.conf and keydir/ are up to date.\n"
    )
    return 0
