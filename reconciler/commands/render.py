"""`reconcile render`: write gitosis.conf and inline users' keys from cluster.d/."""

from __future__ import annotations

import sys
from pathlib import Path

from reconciler.errors import ConfigErrors


def run(directory: Path) -> int:
    from reconciler.commands.validate import print_problems
    from reconciler.desired import load
    from reconciler.desired.render import write_admin_files

    out = sys.stdout
    err = sys.stderr
    try:
        desired = load(directory)
    except ConfigErrors as exc:
        print_problems(err, exc.errors)
        return 1
    changed = write_admin_files(desired, directory)
    for path in changed:
        out.write(f"wrote {directory / path}\n")
    if not changed:
        out.write("gitosis.conf and keydir/ are already up to date.\n")
    return 0
