"""`reconcile render`: write gitosis.conf and inline users' keys from cluster.d/."""

from __future__ import annotations

import sys
from pathlib import Path


def run(directory: Path) -> int:
    from reconciler.commands.validate import load_or_report
    from reconciler.desired.render import remove_orphaned_key_files, write_admin_files

    out = sys.stdout
    desired = load_or_report(directory, sys.stderr)
    if desired is None:
        return 1
    changed = write_admin_files(desired, directory)
    for path in changed:
        out.write(f"wrote {directory / path}\n")
    removed = remove_orphaned_key_files(desired, directory)
    for path in removed:
        out.write(f"removed {directory / path} (the user left cluster.d/)\n")
    changed += removed
    if not changed:
        out.write("gitosis.conf and keydir/ are already up to date.\n")
    return 0
