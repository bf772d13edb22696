"""`reconcile render`: write gitosis.conf and inline users' keys from cluster.d/."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from reconciler.errors import ConfigErrors


def run(directory: Path) -> int:
    from reconciler.commands.validate import print_problems
    from reconciler.desired import load
    from reconciler.desired.render import remove_orphaned_key_files, write_admin_files

    out = Console(soft_wrap=True, highlight=False)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        desired = load(directory)
    except ConfigErrors as exc:
        print_problems(err, exc.errors)
        return 1
    changed = write_admin_files(desired, directory)
    for path in changed:
        out.print(f"wrote {directory / path}", markup=False)
    removed = remove_orphaned_key_files(desired, directory)
    for path in removed:
        out.print(f"removed {directory / path} (the user left cluster.d/)", markup=False)
    changed += removed
    if not changed:
        out.print("gitosis.conf and keydir/ are already up to date.", markup=False)
    return 0
