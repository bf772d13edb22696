"""`reconcile import`: write cluster.d/ from an existing gitosis.conf and keydir/."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from reconciler.errors import ConfigErrors, ReconcilerError


def run(directory: Path) -> int:
    from reconciler.commands.validate import print_problems
    from reconciler.desired.importer import import_gitosis, write_import

    out = Console(soft_wrap=True, highlight=False)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        result = import_gitosis(directory)
        written = write_import(directory, result)
    except ConfigErrors as exc:
        print_problems(sys.stderr, exc.errors)
        return 1
    except ReconcilerError as exc:
        err.print(str(exc), markup=False)
        return 1
    for warning in result.warnings:
        err.print(f"warning: {warning}", markup=False, style="yellow")
    for path in written:
        out.print(f"wrote {directory / path}", markup=False)
    cluster_file = directory / "cluster.d" / "10-cluster.yaml"
    out.print(
        f"Next: fill in the servers in {cluster_file}, then run 'reconcile render' and "
        "'reconcile validate' and commit.",
        markup=False,
    )
    return 0
