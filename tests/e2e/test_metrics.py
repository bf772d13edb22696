"""Metrics and log lines on real sshd servers: a peer stops, pushes queue for it, it
comes back, one ``apply --cron --textfile`` repairs everything and the gauges say so."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest

from reconciler.commands.textfile import TEXTFILE_NAME
from reconciler.logline import LOG_FORMATS
from reconciler.testing.promtool import (
    Samples,
    check_metrics,
    parse_samples,
    series,
    unavailable_reason,
    value,
)
from reconciler.testing.recipe import Operator, commit, user_clone, user_git
from tests.e2e.test_integrity import assert_converged, converged_cluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or ""),
]

PROBLEM_GAUGES = (
    "reconcile_replication_queue_entries",
    "reconcile_replication_queue_oldest_age_seconds",
    "reconcile_replication_queue_review_entries",
    "reconcile_replication_queue_unreadable_files",
    "reconcile_repositories_missing",
    "reconcile_hooks_not_current",
    "reconcile_hooks_foreign",
    "reconcile_conflicts",
)


def metrics(operator: Operator, code: int) -> tuple[Samples, str]:
    done = operator.reconcile("status", "--format", "prometheus")
    assert done.returncode == code, done.stdout + done.stderr
    check_metrics(done.stdout)
    return parse_samples(done.stdout), done.stdout


def read_textfile(directory: Path) -> Samples:
    text = (directory / TEXTFILE_NAME).read_text()
    check_metrics(text)
    return parse_samples(text)


def logfmt(line: str) -> dict[str, str]:
    """The fields of one logfmt line (values quoted only when they must be)."""
    import shlex

    return dict(item.split("=", 1) for item in shlex.split(line))


def test_metrics_through_a_peer_outage_and_its_repair(ssh_cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster, alice, operator = converged_cluster(ssh_cluster_factory, tmp_path)
    alpha, _beta, gamma = cluster.servers
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    work = tmp_path / "work"
    user_clone(cluster, alice, alpha, "product", work)
    commit(work, "base")
    user_git(cluster, alice, work, "push", "origin", "HEAD:refs/heads/main")
    before, _ = metrics(operator, 0)
    assert value(before, "reconcile_refs", server="gamma", state="in_sync") == 1

    gamma.stop()
    for branch in ("main", "topic-a", "topic-b"):
        commit(work, f"while gamma is away: {branch}")
        done = user_git(cluster, alice, work, "push", "origin", f"HEAD:refs/heads/{branch}")
        assert "gamma unreachable: queued" in done.stderr, done.stderr

    down, _ = metrics(operator, 1)
    assert value(down, "reconcile_server_up", server="gamma") == 0
    assert value(down, "reconcile_server_up", server="alpha") == 1
    assert value(down, "reconcile_replication_queue_entries", server="alpha", peer="gamma") == 3
    assert value(down, "reconcile_replication_queue_entries", server="alpha", peer="beta") == 0
    age = value(
        down, "reconcile_replication_queue_oldest_age_seconds", server="alpha", peer="gamma"
    )
    assert age is not None and age > 0
    # Nothing about gamma beyond "down": its refs and hooks are unknown, not zero.
    assert series(down, "reconcile_refs", server="gamma") == {}
    assert series(down, "reconcile_hooks_not_current", server="gamma") == {}
    pushes = "reconcile_replication_pushes_total"
    assert value(down, pushes, server="alpha", peer="gamma", result="unreachable") == 3
    assert value(down, pushes, server="alpha", peer="beta", result="ok") == 4
    duration = "reconcile_replication_push_duration_seconds"
    assert value(down, f"{duration}_count", server="alpha", peer="beta") == 4
    p50 = value(down, duration, server="alpha", peer="beta", quantile="0.5")
    assert p50 is not None and 0 < p50 < 10

    # status itself does not claim what it could not read.
    text = operator.reconcile("status")
    assert text.returncode == 1
    assert "in sync on alpha, beta" in text.stdout and "unknown: gamma" in text.stdout, text.stdout
    data = json.loads(operator.reconcile("status", "--json").stdout)
    assert data["complete"] is False and data["servers_unknown"] == ["gamma"]
    assert data["servers"][2]["queue_depth"] is None

    gamma.start()
    back, _ = metrics(operator, 2)
    assert value(back, "reconcile_server_up", server="gamma") == 1
    assert value(back, "reconcile_refs", server="gamma", state="behind") == 1  # main
    assert value(back, "reconcile_refs", server="gamma", state="missing") == 2  # the topics
    assert value(back, "reconcile_refs", server="gamma", state="in_sync") == 0
    assert value(back, "reconcile_refs", server="alpha", state="in_sync") == 3
    assert value(back, "reconcile_refs", server="beta", state="behind") == 0

    noted = operator.reconcile("status", "--textfile", str(textfile))
    assert noted.returncode == 2 and noted.stdout == "", noted.stdout + noted.stderr
    first = read_textfile(textfile)
    assert value(first, "reconcile_refs", server="gamma", state="missing") == 2
    inode = (textfile / TEXTFILE_NAME).stat().st_ino

    cron = operator.reconcile("apply", "--yes", "--cron", "--textfile", str(textfile))
    assert cron.returncode == 0, cron.stdout + cron.stderr
    lines = cron.stdout.splitlines()
    assert lines, cron.stderr
    for line in lines:
        fields = logfmt(line)
        assert fields["level"] == "info" and fields["result"] == "ok", line
        assert {"time", "server", "action", "msg"} <= fields.keys(), line
    assert any(logfmt(line).get("repository") == "product" and "gamma" in line for line in lines), (
        lines
    )

    after = read_textfile(textfile)
    assert (textfile / TEXTFILE_NAME).stat().st_ino != inode
    assert sorted(p.name for p in textfile.iterdir()) == [TEXTFILE_NAME]  # no temporary left
    for name in PROBLEM_GAUGES:
        found = series(after, name)
        assert found and set(found.values()) == {0}, (name, found)
    for state in ("behind", "missing", "diverged"):
        assert set(series(after, "reconcile_refs", state=state).values()) == {0}
    assert set(series(after, "reconcile_server_up").values()) == {1}
    assert value(after, "reconcile_refs", server="gamma", state="in_sync") == 3
    assert value(after, "reconcile_last_run_exit_code") == 0
    assert value(after, "reconcile_last_run_changes", result="failed") == 0
    assert (value(after, "reconcile_last_run_changes", result="applied") or 0) >= 1
    success = value(after, "reconcile_last_success_timestamp_seconds")
    assert success == value(after, "reconcile_last_run_timestamp_seconds")
    duration_s = value(after, "reconcile_last_run_duration_seconds")
    assert duration_s is not None and duration_s > 0

    # Apply twice: the second finds nothing, prints nothing, and says so in the file.
    quiet = operator.reconcile("apply", "--yes", "--cron", "--textfile", str(textfile))
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == "", quiet
    again = read_textfile(textfile)
    assert value(again, "reconcile_last_run_changes", result="applied") == 0
    assert_converged(operator)

    # A run that fails keeps the last success from the file and logs one JSON line.
    assert "json" in LOG_FORMATS
    kept = value(again, "reconcile_last_success_timestamp_seconds")
    with open(operator.checkout / ".git" / "reconcile.lock", "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        failed = operator.reconcile(
            "apply", "--yes", "--cron", "--log-format", "json", "--textfile", str(textfile)
        )
    assert failed.returncode == 1 and failed.stdout == "", failed
    [line] = failed.stderr.splitlines()
    event = json.loads(line)
    assert event["level"] == "error" and event["result"] == "error"
    assert "another reconcile apply is running" in event["msg"]
    failure = read_textfile(textfile)
    assert value(failure, "reconcile_last_run_exit_code") == 1
    assert value(failure, "reconcile_last_success_timestamp_seconds") == kept
    assert (value(failure, "reconcile_last_run_timestamp_seconds") or 0) > (kept or 0)
