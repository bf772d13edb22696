"""The foreign post-receive that apply kept (hooks/post-receive.foreign-TIME), run after
replicating when the settings say ``run_kept_hooks`` (issue 13 item 3)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from reconciler.replication import settings_json

from .conftest import Cluster, build_cluster, live_processes, remote_lines

KEPT = "post-receive.foreign-20250102T030405"
# The recipe's shell loop, plus the team's notification: it pushes --mirror to every
# remote, which would delete the peer's refs that this server does not have.
SHELL_LOOP = """#!/bin/sh
cat > "$NOTIFIED"
echo "notified the team"
status=0
for remote in $(git remote); do
    git push --quiet --mirror "$remote" || status=1
done
exit $status
"""


def enable(cluster: Cluster, server: str, on: bool = True, timeout: float = 20) -> None:
    peers = [n for n in cluster.servers if n != server]
    (cluster[server].base / ".reconciler/replication.json").write_bytes(
        settings_json(
            server=server,
            peers=peers,
            mirror_users=[f"git@{n}" for n in cluster.servers],
            timeout=timeout,
            run_kept_hooks=on,
        )
    )


def keep(cluster: Cluster, server: str, text: str, name: str = KEPT, mode: int = 0o755) -> Path:
    path = cluster[server].repository() / "hooks" / name
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def pair(tmp_path: Path) -> Cluster:
    return build_cluster(tmp_path, names=("master", "mirror"))


def test_the_kept_hook_runs_after_replicating_and_cannot_push_to_a_peer(
    pair: Cluster, tmp_path: Path
) -> None:
    enable(pair, "master")
    keep(pair, "master", SHELL_LOOP)
    # A branch only the mirror has (someone pushed it there a moment ago).
    pair.commit("mirror's own")
    pair.push("mirror", "main:refs/heads/only-on-mirror", RECONCILER_REPLICA="test")
    notified = tmp_path / "notified"
    new = pair.commit("pushed to master")

    result, _ = pair.push("master", "main", NOTIFIED=str(notified))
    lines = remote_lines(result.stderr)
    assert lines[0] == "replicated to mirror"
    assert "notified the team" in lines
    assert lines[-1] == f"kept post-receive hook {KEPT} exited with 1 (replication is not affected)"
    assert any("/dev/null/mirror: the replication hook pushes to mirror" in line for line in lines)
    # Same input as the replication hook got; the mirror's own branch survived the loop.
    assert notified.read_text().split() == ["0" * 40, new, "refs/heads/main"]
    assert pair.refs("mirror")["refs/heads/main"] == new
    assert "refs/heads/only-on-mirror" in pair.refs("mirror")


def test_kept_hooks_run_only_when_the_settings_say_so(pair: Cluster, tmp_path: Path) -> None:
    keep(pair, "master", SHELL_LOOP)
    notified = tmp_path / "notified"
    enable(pair, "master")
    pair.commit("one")
    pair.push("master", "main", NOTIFIED=str(notified))
    assert notified.exists()
    notified.unlink()
    enable(pair, "master", on=False)
    pair.commit("two")
    result, _ = pair.push("master", "main", NOTIFIED=str(notified))
    assert remote_lines(result.stderr) == ["replicated to mirror"]
    assert not notified.exists()


def test_only_a_push_made_here_runs_it_not_one_from_a_peer(pair: Cluster, tmp_path: Path) -> None:
    enable(pair, "master")
    keep(pair, "master", SHELL_LOOP)
    notified = tmp_path / "notified"
    pair.commit("one")
    result, _ = pair.push("master", "main", NOTIFIED=str(notified), GITOSIS_USER="git@mirror")
    assert remote_lines(result.stderr) == []
    assert not notified.exists()
    pair.commit("two")
    result, _ = pair.push("master", "main", NOTIFIED=str(notified), GITOSIS_USER="alice@desk")
    assert "notified the team" in remote_lines(result.stderr)
    assert notified.exists()


def test_the_newest_kept_hook_runs_and_not_one_that_is_not_executable(pair: Cluster) -> None:
    enable(pair, "master")
    keep(pair, "master", "#!/bin/sh\necho older\n", name="post-receive.foreign-20240101T000000")
    keep(pair, "master", "#!/bin/sh\necho newest\n")
    pair.commit("one")
    result, _ = pair.push("master", "main")
    assert remote_lines(result.stderr) == ["replicated to mirror", "newest"]
    keep(pair, "master", "#!/bin/sh\necho newest\n", mode=0o644)
    pair.commit("two")
    result, _ = pair.push("master", "main")
    assert remote_lines(result.stderr) == ["replicated to mirror"]


def test_a_kept_hook_that_hangs_is_stopped_within_the_timeout(pair: Cluster) -> None:
    enable(pair, "master", timeout=2)
    keep(pair, "master", "#!/bin/sh\necho waiting\nsleep 37\n")
    new = pair.commit("one")
    result, elapsed = pair.push("master", "main")
    assert remote_lines(result.stderr) == [
        "replicated to mirror",
        "waiting",
        f"kept post-receive hook {KEPT} stopped after 2s",
    ]
    assert elapsed < 15, elapsed
    assert pair.refs("mirror")["refs/heads/main"] == new
    deadline = time.monotonic() + 5
    while live_processes("sleep", "37") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not live_processes("sleep", "37")


def test_a_kept_hook_that_cannot_start_is_one_line(pair: Cluster) -> None:
    enable(pair, "master")
    keep(pair, "master", "#!/nonexistent/interpreter\necho never\n")
    new = pair.commit("one")
    result, _ = pair.push("master", "main")
    lines = remote_lines(result.stderr)
    assert lines[0] == "replicated to mirror"
    assert len(lines) == 2 and lines[1].startswith("kept post-receive hook: error:"), lines
    assert pair.refs("mirror")["refs/heads/main"] == new


def test_a_kept_hook_without_an_interpreter_line_runs_with_sh_as_git_runs_it(
    pair: Cluster,
) -> None:
    enable(pair, "master")
    keep(pair, "master", 'read old new ref\necho "sh got $ref"\n')
    pair.commit("one")
    result, _ = pair.push("master", "main")
    assert remote_lines(result.stderr) == ["replicated to mirror", "sh got refs/heads/main"]
