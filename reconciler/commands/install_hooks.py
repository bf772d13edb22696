"""`reconcile install-hooks`: the pre-push check in the admin checkout."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from reconciler.errors import ReconcilerError


def run(directory: Path) -> int:
    from reconciler.desired.pre_push import install_pre_push

    out = Console(soft_wrap=True, highlight=False)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        result = install_pre_push(directory)
    except ReconcilerError as exc:
        err.print(str(exc), markup=False)
        return 1
    if result.changed:
        out.print(
            f"installed the pre-push check at {result.path}: a push whose cluster.d/ is "
            "invalid is refused",
            markup=False,
        )
    else:
        out.print(f"the pre-push check at {result.path} is already up to date", markup=False)
    return 0
