"""The demo on the project's own cluster.d/ (``python -m reconciler.demo``).

It never writes into the project's repository: it copies the top-level
cluster.d/ into a scratch admin checkout at ``.cluster/admin`` (git-ignored),
then validates and renders there. Each step is a function so that the demo can
grow (create the local servers, plan, apply) without changing its shape.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from rich.console import Console

SCRATCH = ".cluster"


def project_root() -> Path:
    """The checkout holding the example cluster.d/ (the package sits inside it)."""
    candidate = Path(__file__).resolve().parent.parent
    if (candidate / "cluster.d").is_dir():
        return candidate
    return Path.cwd()


def shown(path: Path) -> Path:
    """A path as short as it can be shown from the current directory."""
    try:
        return Path(os.path.relpath(path))
    except ValueError:  # pragma: no cover - another drive on Windows
        return path


def prepare_admin_checkout(root: Path, console: Console) -> Path:
    """A fresh copy of cluster.d/ in .cluster/admin, a git repository of its own."""
    admin = root / SCRATCH / "admin"
    admin.mkdir(parents=True, exist_ok=True)
    if not (admin / ".git").exists():
        subprocess.run(["git", "init", "--quiet", str(admin)], check=True)
        console.print(f"created the scratch admin checkout {shown(admin)}", markup=False)
    target = admin / "cluster.d"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(root / "cluster.d", target)
    console.print(f"copied cluster.d/ to {shown(target)}", markup=False)
    return admin


def validate_and_render(admin: Path, console: Console) -> int:
    from reconciler.commands import render, validate

    directory = shown(admin)
    console.print(f"$ reconcile render -C {directory}", markup=False, style="bold")
    code = render.run(directory)
    if code != 0:
        return code
    console.print(f"$ reconcile validate -C {directory}", markup=False, style="bold")
    return validate.run(directory)


def main() -> int:
    console = Console(soft_wrap=True, highlight=False)
    root = project_root()
    admin = prepare_admin_checkout(root, console)
    return validate_and_render(admin, console)


if __name__ == "__main__":
    raise SystemExit(main())
