"""Setting up a benchmark cluster fast, and timing commands.

Repositories are made in bulk, never one command per repository from here:

1. a template repository with history is built once with ``git fast-import`` in a
   world-readable directory;
2. it is copied onto the first server as one "seed" repository, which
   ``reconcile apply`` mirrors to the other servers (clone, remotes, hook);
3. on every server, one Python process run as that server's user copies the
   converged seed N times (pack files hard-linked, the config's remote URLs
   renamed), which is exactly what apply would have made;
4. cluster.d/ then lists all N, ``reconcile apply`` brings the admin repository
   in line, and ``reconcile plan --detailed-exitcode`` must say "no changes".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.testing.cluster import SYSTEM_PYTHON, Identity, SshCluster, SshServer
from reconciler.testing.recipe import Operator, make_operator

SEED = "r00000"
FLOOR_REPOSITORY = "p-floor"  # pushed to directly: its hook is removed for the floor
PUSH_REPOSITORY = "p-push"  # pushed to through the replication hook
SETUP_TIMEOUT = 1800.0
RUN_TIMEOUT = 600.0


def repository_names(count: int) -> list[str]:
    return [f"r{i:05d}" for i in range(count)]


# -- timing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    seconds: float
    max_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def _reap(process: subprocess.Popen[bytes], timeout: float) -> tuple[int, float]:
    """Wait for ``process`` (killed after ``timeout``); its exit status and peak RSS in MB."""
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        _pid, status, usage = os.wait4(process.pid, 0)
    finally:
        timer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss / 1024.0


def run_timed(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: bytes = b"",
    timeout: float = RUN_TIMEOUT,
) -> Timed:
    """Run ``argv``; wall time from spawn to exit, and the child's peak RSS."""
    return run_parallel([argv], env=env, cwd=cwd, stdin=stdin, timeout=timeout)[0]


def run_parallel(
    commands: Sequence[Sequence[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: bytes = b"",
    timeout: float = RUN_TIMEOUT,
) -> list[Timed]:
    """Start every command at once; each one's ``seconds`` is the wall time of the lot."""
    with tempfile.TemporaryDirectory(prefix="rcl-bench-out-") as scratch:
        outputs = []
        processes = []
        inputs = Path(scratch) / "stdin"
        inputs.write_bytes(stdin)
        started = time.perf_counter()
        for index, argv in enumerate(commands):
            out = open(Path(scratch) / f"{index}.out", "w+b")  # noqa: SIM115
            err = open(Path(scratch) / f"{index}.err", "w+b")  # noqa: SIM115
            with open(inputs, "rb") as source:
                processes.append(
                    subprocess.Popen(
                        list(argv),
                        stdin=source,
                        stdout=out,
                        stderr=err,
                        env=dict(env) if env is not None else None,
                        cwd=cwd,
                    )
                )
            outputs.append((out, err))
        reaped = [_reap(p, timeout) for p in processes]
        seconds = time.perf_counter() - started
        results = []
        for (out, err), (code, rss) in zip(outputs, reaped, strict=True):
            out.seek(0)
            err.seek(0)
            results.append(
                Timed(
                    seconds,
                    rss,
                    code,
                    out.read().decode("utf-8", "replace"),
                    err.read().decode("utf-8", "replace"),
                )
            )
            out.close()
            err.close()
        return results


def reconcile_argv() -> list[str]:
    """The installed ``reconcile`` console script, as an operator runs it."""
    script = Path(sys.executable).parent / "reconcile"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "reconciler"]


def ssh_argv(cluster: SshCluster, server: SshServer, identity: Identity | None = None) -> list[str]:
    return [*cluster.ssh_command(identity), "-p", str(server.port), f"{server.user}@127.0.0.1"]


# -- building repositories --------------------------------------------------------------


def _fast_import_stream(commits: int) -> bytes:
    """``commits`` commits on master (one file changed each), a branch, and a tag."""
    lines: list[str] = []
    when = 1_700_000_000
    for i in range(1, commits + 1):
        content = "".join(f"line {j} of change {i}\n" for j in range(20))
        message = f"change {i}\n"
        lines += [
            "commit refs/heads/master",
            f"mark :{i}",
            f"committer Bench <bench@localhost> {when + i} +0000",
            f"data {len(message.encode())}",
            message.rstrip("\n"),
        ]
        if i > 1:
            lines.append(f"from :{i - 1}")
        lines += [
            f"M 644 inline src/file{i % 7}.txt",
            f"data {len(content.encode())}",
            content.rstrip("\n"),
            "",
        ]
    branch_at = max(1, commits - 2)
    lines += ["reset refs/heads/develop", f"from :{branch_at}", ""]
    lines += ["reset refs/tags/v1.0", f"from :{max(1, commits // 2)}", ""]
    return ("\n".join(lines) + "\n").encode()


def make_template(directory: Path, commits: int) -> Path:
    """A bare repository with history, world-readable, for the servers to copy."""
    template = directory / "template.git"
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(directory)}
    # No sample hooks (an empty template directory): fewer files to copy N times.
    empty = directory / "empty-template"
    empty.mkdir()
    subprocess.run(
        ["git", "init", "--quiet", "--bare", f"--template={empty}", str(template)],
        check=True,
        env=env,
        timeout=60,
    )
    subprocess.run(
        ["git", "--git-dir", str(template), "fast-import", "--quiet"],
        input=_fast_import_stream(commits),
        check=True,
        env=env,
        timeout=300,
    )
    # fast-import leaves small imports as loose objects; a pushed-to repository is packed.
    for command in (["repack", "-a", "-d", "-q"], ["prune-packed"], ["pack-refs", "--all"]):
        subprocess.run(
            ["git", "--git-dir", str(template), *command], check=True, env=env, timeout=120
        )
    # One loose ref as well, as a pushed-to repository has.
    master = subprocess.run(
        ["git", "--git-dir", str(template), "rev-parse", "master"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    ).stdout.strip()
    (template / "refs" / "heads" / "master").write_text(master + "\n")
    for path in [directory, *directory.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return template


# Run as a server's user: copy a source repository to many names. Objects are
# hard-linked (git never changes a pack or loose object in place); the config is
# rewritten with the repository's own name in its remote URLs.
_COPY_SCRIPT = r"""
import json, os, shutil, sys
request = json.load(sys.stdin)
base = os.path.expanduser("~/repositories")
source = request["source"]
if not os.path.isabs(source):
    source = os.path.join(base, source + ".git")
config = open(os.path.join(source, "config")).read()
old = "/" + request["rename_from"] + ".git" if request.get("rename_from") else None
def copy(src, dst):
    if os.sep + "objects" + os.sep in src:
        try:
            os.link(src, dst)
            return dst
        except OSError:
            pass
    return shutil.copy2(src, dst)
made = 0
for name in request["names"]:
    target = os.path.join(base, name + ".git")
    if os.path.exists(target):
        continue
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copytree(source, target, symlinks=True, copy_function=copy,
                    ignore=shutil.ignore_patterns("config", "*.sample"))
    text = config.replace(old, "/" + name + ".git") if old else config
    with open(os.path.join(target, "config"), "w") as handle:
        handle.write(text)
    made += 1
print(made)
"""


def copy_repositories(
    server: SshServer, source: str, names: Sequence[str], *, rename_from: str | None
) -> None:
    server.run(
        [str(SYSTEM_PYTHON), "-c", _COPY_SCRIPT],
        input=json.dumps({"source": source, "names": list(names), "rename_from": rename_from}),
        timeout=SETUP_TIMEOUT,
    )


def copy_everywhere(
    servers: Sequence[SshServer], source: str, names: Sequence[str], *, rename_from: str | None
) -> None:
    """Copy on every server at once (one process each)."""
    errors: list[BaseException] = []

    def one(server: SshServer) -> None:
        try:
            copy_repositories(server, source, names, rename_from=rename_from)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(s,)) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SETUP_TIMEOUT)
    if errors:
        raise errors[0]


# -- cluster.d/ -----------------------------------------------------------------------


@dataclass
class Scenario:
    """A started cluster with an operator whose cluster.d/ we control."""

    cluster: SshCluster
    operator: Operator
    workdir: Path
    alice: Identity
    template: Path

    def write_cluster_d(
        self,
        servers: Sequence[SshServer],
        repositories: Sequence[str],
        *,
        mode: str = "sync",
    ) -> None:
        alice = self.alice.public_key
        pushable = [r for r in (PUSH_REPOSITORY, FLOOR_REPOSITORY) if r in repositories]
        head = [
            "cluster:",
            "  name: bench",
            "  replication:",
            f"    mode: {mode}",
            "    timeout: 30",
            "servers:",
        ]
        for server in servers:
            head += [f"  {server.name}:", f"    url: {server.url}"]
        head += [
            "groups:",
            "  gitosis-admin:",
            "    members: [admin@operator]",
            "    writable: [gitosis-admin]",
            "  developers:",
            "    members: [alice@desk]",
            f"    writable: [{', '.join(pushable)}]",
            "users:",
            f"  alice@desk: {alice}",
        ]
        directory = self.operator.checkout / "cluster.d"
        directory.mkdir(exist_ok=True)
        (directory / "10-cluster.yaml").write_text("\n".join(head) + "\n")
        body = ["repositories:", *(f"  {name}: {{}}" for name in repositories)]
        (directory / "20-repositories.yaml").write_text("\n".join(body) + "\n")

    def reconcile(self, *args: str, extra_env: Mapping[str, str] | None = None) -> Timed:
        return run_timed(
            [*reconcile_argv(), *args, "-C", str(self.operator.checkout)],
            env=self.operator.env(extra_env),
            timeout=SETUP_TIMEOUT,
        )

    def must(
        self,
        *args: str,
        codes: tuple[int, ...] = (0,),
        extra_env: Mapping[str, str] | None = None,
    ) -> Timed:
        done = self.reconcile(*args, extra_env=extra_env)
        if done.returncode not in codes:
            raise RuntimeError(
                f"reconcile {' '.join(args)} exited {done.returncode}\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def converge(
        self,
        servers: Sequence[SshServer],
        names: Sequence[str],
        *,
        extra: Sequence[str] = (PUSH_REPOSITORY, FLOOR_REPOSITORY),
        mode: str = "sync",
    ) -> None:
        """Make ``names`` (and ``extra``) mirrored on ``servers``; end converged."""
        first = servers[0]
        seed_path = first.home / "repositories" / f"{SEED}.git"
        if not seed_path.exists():
            copy_repositories(first, str(self.template), [SEED], rename_from=None)
            self.write_cluster_d(servers, [SEED], mode=mode)
            self.must("apply", "--yes")
        rest = [n for n in [*extra, *names] if n != SEED]
        copy_everywhere(servers, SEED, rest, rename_from=SEED)
        self.write_cluster_d(servers, [*extra, *names], mode=mode)
        self.must("apply", "--yes")
        self.must("plan", "--detailed-exitcode")


def start_scenario(cluster: SshCluster, workdir: Path, commits: int) -> Scenario:
    """gitosis-init on every server of a started cluster, an operator, a template."""
    for server in cluster.servers:
        server.gitosis_init(cluster.admin.public_key)
    operator = make_operator(cluster, workdir, clone_from=cluster.servers[0])
    alice = cluster.new_identity("alice@desk")
    template_dir = Path(tempfile.mkdtemp(prefix="rcl-bench-template-", dir=workdir))
    workdir.chmod(0o755)
    template = make_template(template_dir, commits)
    return Scenario(cluster, operator, workdir, alice, template)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
