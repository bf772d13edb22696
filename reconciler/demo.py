"""The demo: the project's cluster.d/ on three local-directory servers under .cluster/.

Run by ``scripts/demo.sh``. It works in a scratch admin checkout under
``.cluster/admin`` (never in the project's own repository): validate, plan, apply,
then a user pushes a commit to one server and it appears on the others, and a
second apply finds nothing to do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from reconciler.cli import main as reconcile

console = Console(highlight=False, soft_wrap=True)


def project_root() -> Path:
    """The checkout holding the example cluster.d/ (the package sits inside it)."""
    candidate = Path(__file__).resolve().parent.parent
    if (candidate / "cluster.d").is_dir():
        return candidate
    return Path.cwd()


def step(title: str) -> None:
    console.print(f"\n[bold cyan]==> {title}[/]")


def git(*args: str, cwd: Path) -> str:
    env = dict(os.environ)
    env.update(
        GIT_AUTHOR_NAME="Alice",
        GIT_AUTHOR_EMAIL="alice@example.com",
        GIT_COMMITTER_NAME="Alice",
        GIT_COMMITTER_EMAIL="alice@example.com",
    )
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True, timeout=120
    )
    return (done.stdout + done.stderr).strip()


def run_reconcile(*args: str) -> int:
    console.print(f"[dim]$ reconcile {' '.join(args)}[/]")
    sys.stdout.flush()
    code = reconcile(list(args))
    sys.stdout.flush()
    console.print(f"[dim](exit code {code})[/]")
    return code


def prepare(base: Path) -> Path:
    """A fresh admin checkout holding the project's cluster.d/, and empty servers."""
    if base.exists():
        shutil.rmtree(base)
    admin = base / "admin"
    admin.mkdir(parents=True)
    shutil.copytree(base.parent / "cluster.d", admin / "cluster.d")
    schemas = base.parent / "schemas"
    if schemas.is_dir():
        shutil.copytree(schemas, base / "schemas")  # for the editor's $schema line
    for name in ("alpha", "beta", "gamma"):
        (base / "servers" / name).mkdir(parents=True)
    git("init", "--quiet", "--initial-branch=master", cwd=admin)
    git("add", "cluster.d", cwd=admin)
    git("commit", "--quiet", "-m", "cluster.d/ from the reconciler project", cwd=admin)
    return admin


def main() -> int:
    base = project_root() / ".cluster"
    admin = prepare(base)
    servers = base / "servers"
    console.print(f"Admin checkout: {admin}\nServers: {', '.join(sorted(os.listdir(servers)))}")

    step("Render gitosis.conf and keydir/ from cluster.d/, and commit them")
    if run_reconcile("render", "-C", str(admin)) != 0:
        return 1
    git("add", "--all", cwd=admin)
    git("commit", "--quiet", "-m", "Render gitosis.conf and keydir/", cwd=admin)

    step("Plan: what apply would change")
    if run_reconcile("plan", "-C", str(admin), "--detailed-exitcode") not in (0, 2):
        return 1

    step("Apply")
    if run_reconcile("apply", "-C", str(admin), "--yes") != 0:
        return 1

    step("A user pushes a commit to beta")
    work = base / "work" / "product"
    git("clone", "--quiet", str(servers / "beta/repositories/product.git"), str(work), cwd=base)
    (work / "README").write_text("Hello from the demo\n")
    git("add", "README", cwd=work)
    git("commit", "--quiet", "-m", "First commit", cwd=work)
    console.print(git("push", "origin", "HEAD:refs/heads/main", cwd=work))
    commit = git("rev-parse", "HEAD", cwd=work)

    step("The commit is on every server")
    ok = True
    for name in ("alpha", "beta", "gamma"):
        repo = servers / name / "repositories/product.git"
        done = subprocess.run(
            ["git", "--git-dir", str(repo), "rev-parse", "--verify", "--quiet", "refs/heads/main"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        value = done.stdout.strip()
        same = value == commit
        ok = ok and same
        mark = "[green]✓[/]" if same else "[red]✗[/]"
        console.print(f"  {mark} {name}: refs/heads/main = {value or '(missing)'}")

    step("Apply again: nothing to do")
    again = run_reconcile("apply", "-C", str(admin), "--yes")
    step("Validate the admin checkout (offline): cluster.d/ and the committed files agree")
    valid = run_reconcile("validate", "-C", str(admin))
    if not ok or again != 0 or valid != 0:
        console.print("[bold red]The demo did not converge.[/]")
        return 1
    console.print("\n[bold green]Demo complete:[/] three servers, one cluster, every ref equal.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
