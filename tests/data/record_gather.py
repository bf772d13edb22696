"""Record what the gather program answers on real servers, for the fact parser's tests.

    sudo uv run --frozen python tests/data/record_gather.py

starts two real sshd servers on 127.0.0.1 (``reconciler.testing.cluster``, needs
root), applies the end-to-end scenario's cluster.d/ to them (two repositories, one
with a description, the hooks, remotes, keys, known_hosts, the server library), has a
user push a branch and a tag, then runs the gather program as ``reconcile plan`` does
and writes each server's answer, unchanged, to ``tests/data/gather-<server>.json``.
Everything it started is stopped and its users removed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent


def gather_all(checkout: Path) -> dict[str, object]:
    """Run in the operator's environment: each server's raw gather answer."""
    from reconciler.desired import load
    from reconciler.gather import open_transports, run_json_program
    from reconciler.planning.repository_settings import gather_request

    desired = load(checkout)
    answers: dict[str, object] = {}
    transports = open_transports(desired, desired.servers)
    try:
        for name, transport in transports.items():
            server = desired.servers[name]
            request = {
                "repositories": server.repositories,
                "admin": desired.cluster.admin_repository,
                "refs": False,
                **gather_request(desired),
            }
            answers[name] = run_json_program(transport, "gather", request)
    finally:
        for transport in transports.values():
            transport.close()
    return answers


def record() -> None:
    from reconciler.testing.cluster import SshCluster
    from tests.e2e.scenario import start_scenario

    with SshCluster(2) as cluster, tempfile.TemporaryDirectory() as work:
        scenario = start_scenario(cluster, Path(work))
        scenario.apply_twice()
        clone = Path(work) / "product"
        env = cluster.git_env(scenario.alice)
        a = cluster.servers[0]
        git = ["git", "-c", "user.name=Alice", "-c", "user.email=alice@example.com"]
        subprocess.run(
            [*git, "clone", "-q", f"{a.url}/product.git", str(clone)],
            env=env,
            check=True,
            timeout=120,
        )
        subprocess.run(
            [*git, "-C", str(clone), "commit", "-q", "--allow-empty", "-m", "first"],
            env=env,
            check=True,
            timeout=60,
        )
        subprocess.run([*git, "-C", str(clone), "tag", "v1"], env=env, check=True, timeout=60)
        subprocess.run(
            [*git, "-C", str(clone), "push", "-q", "origin", "HEAD:main", "v1"],
            env=env,
            check=True,
            timeout=120,
        )
        done = subprocess.run(
            [sys.executable, __file__, "--gather", str(scenario.operator.checkout)],
            env=scenario.operator.env({"PYTHONPATH": str(ROOT)}),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"gathering failed: {done.stderr}")
        names = {server.name: f"server{i}" for i, server in enumerate(cluster.servers, 1)}
        for name, answer in json.loads(done.stdout).items():
            path = OUT / f"gather-{names[name]}.json"
            path.write_text(json.dumps(answer, indent=1, sort_keys=True) + "\n")
            print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    if sys.argv[1:2] == ["--gather"]:
        json.dump(gather_all(Path(sys.argv[2])), sys.stdout)
    else:
        record()
