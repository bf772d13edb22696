"""The pre-push check in the admin checkout (``reconcile install-hooks``).

The hook validates what is being pushed, not the working tree: each pushed
commit's tree is exported to a temporary directory and ``reconcile validate``
runs there, so a broken cluster.d/ cannot reach the servers even when the
working tree has been fixed but not committed.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from reconciler.desired.files import write_if_changed
from reconciler.errors import Location, ReconcilerError

MARKER = "# reconciler pre-push check, installed by 'reconcile install-hooks'."

_TEMPLATE = """\
#!/bin/sh
{marker}
# Refuses the push when a pushed commit's cluster.d/ is invalid or its rendered
# gitosis.conf and keydir/ are stale: 'reconcile validate' runs on each pushed
# commit's tree. Reinstall with 'reconcile install-hooks'.
set -u
status=0
while read -r local_ref local_sha remote_ref remote_sha; do
    case "$local_sha" in
        *[!0]*) ;;
        *) continue ;;  # a deletion: there is no tree to check
    esac
    tree=$(mktemp -d) || exit 1
    if git archive --format=tar "$local_sha" | tar -x -C "$tree"; then
        if ! (cd "$tree" && {validate} -C . </dev/null); then
            echo "pre-push: $local_ref is refused: its cluster.d/ is not valid (see above)." >&2
            status=1
        fi
    else
        echo "pre-push: cannot export $local_sha to check its cluster.d/" >&2
        status=1
    fi
    rm -rf "$tree"
done
exit $status
"""


def pre_push_script(python: str | None = None) -> str:
    """The hook's text; it runs ``reconcile validate`` with this Python."""
    command = [python or sys.executable, "-m", "reconciler", "validate"]
    return _TEMPLATE.format(marker=MARKER, validate=shlex.join(command))


def hooks_directory(checkout: Path) -> Path:
    """Where git looks for this checkout's hooks (honours core.hooksPath, worktrees)."""
    from reconciler import git

    out = git.run_git(checkout, "rev-parse", "--git-path", "hooks", check=False).strip()
    if not out:
        raise ReconcilerError(
            "this is not a git checkout; run install-hooks in the gitosis-admin clone",
            Location(str(checkout)),
        )
    path = Path(out)
    return path if path.is_absolute() else checkout / path


@dataclass(frozen=True)
class HookInstall:
    path: Path
    changed: bool


def install_pre_push(checkout: Path, python: str | None = None) -> HookInstall:
    """Install or refresh the pre-push hook; never overwrites someone else's hook."""
    path = hooks_directory(checkout) / "pre-push"
    try:
        current = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        current = None
    if current is not None and MARKER not in current:
        raise ReconcilerError(
            "a pre-push hook that reconciler did not write is already there; merge the "
            "check into it by hand ('reconcile validate') or move it away",
            Location(str(path)),
        )
    changed = write_if_changed(path, pre_push_script(python), mode=0o755)
    return HookInstall(path, changed)
