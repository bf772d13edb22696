"""The exposition text of typed values: escaping, HELP/TYPE, one series per server/state."""

from __future__ import annotations

import math

import pytest

from reconciler.facts import PushStats
from reconciler.metrics import (
    Family,
    RunInfo,
    Sample,
    exposition,
    previous_last_success,
    quantile,
    render,
    status_families,
)
from reconciler.refs import RefState
from reconciler.status import REF_STATES, PeerQueue, ServerHealth, StatusReport
from reconciler.testing.promtool import (
    check_metrics,
    parse_samples,
    requires_promtool,
    series,
    value,
)

NOW = 1_800_000_000.0
A, B = "a" * 40, "b" * 40


def report() -> StatusReport:
    behind = RefState("product", "refs/heads/main", {"alpha": B, "beta": A}, tip=B)
    return StatusReport(
        repositories=2,
        refs=(behind,),
        servers=(
            ServerHealth(
                "alpha",
                True,
                queue_depth=3,
                oldest_entry=NOW - 90,
                queues={"beta": PeerQueue(0), "gamma": PeerQueue(3, NOW - 90, 1)},
                refs={"in_sync": 5, "behind": 0, "missing": 0, "diverged": 0},
                pushes={"gamma": PushStats(4, 2.5, {"ok": 1, "unreachable": 3}, (0.1, 0.2, 2.0))},
            ),
            ServerHealth(
                "beta",
                True,
                stale_hooks=("product",),
                queues={"alpha": PeerQueue(), "gamma": PeerQueue()},
                refs={"in_sync": 4, "behind": 1, "missing": 0, "diverged": 0},
            ),
            ServerHealth("gamma", False, error="server gamma: cannot connect"),
        ),
    )


RUN = RunInfo(finished=NOW, duration=1.25, exit_code=1, last_success=NOW - 600)


def test_help_and_type_precede_each_family_and_appear_once() -> None:
    text = exposition(report(), RUN)
    lines = text.splitlines()
    helps = [line.split()[2] for line in lines if line.startswith("# HELP ")]
    types = [line.split()[2] for line in lines if line.startswith("# TYPE ")]
    assert helps == types and len(set(helps)) == len(helps)
    current = ""
    for number, line in enumerate(lines):
        if line.startswith("# TYPE "):
            current = line.split()[2]
            assert lines[number - 1].startswith(f"# HELP {current} ")
        elif not line.startswith("#"):
            # Every sample belongs to the family whose TYPE line came last.
            assert line.startswith(current), (current, line)
    for wanted in (
        "reconcile_server_up",
        "reconcile_replication_queue_entries",
        "reconcile_replication_queue_oldest_age_seconds",
        "reconcile_refs",
        "reconcile_hooks_not_current",
        "reconcile_last_success_timestamp_seconds",
        "reconcile_last_run_duration_seconds",
        "reconcile_replication_push_duration_seconds",
    ):
        assert wanted in helps


def test_one_series_per_server_and_state_and_none_for_an_unreachable_server() -> None:
    samples = parse_samples(exposition(report(), RUN))
    assert value(samples, "reconcile_server_up", server="gamma") == 0
    assert value(samples, "reconcile_server_up", server="alpha") == 1
    refs = series(samples, "reconcile_refs")
    assert len(refs) == 2 * len(REF_STATES)  # alpha and beta, each state once
    assert value(samples, "reconcile_refs", server="beta", state="behind") == 1
    assert value(samples, "reconcile_refs", server="alpha", state="in_sync") == 5
    # gamma was not read: unknown, so no series claims anything about it
    for name in ("reconcile_refs", "reconcile_hooks_not_current"):
        assert series(samples, name, server="gamma") == {}
    assert value(samples, "reconcile_hooks_not_current", server="beta") == 1
    assert value(samples, "reconcile_replication_queue_entries", server="alpha", peer="gamma") == 3
    assert (
        value(
            samples, "reconcile_replication_queue_oldest_age_seconds", server="alpha", peer="gamma"
        )
        == 90
    )
    assert (
        value(
            samples, "reconcile_replication_queue_oldest_age_seconds", server="alpha", peer="beta"
        )
        == 0
    )
    assert (
        value(samples, "reconcile_replication_queue_review_entries", server="alpha", peer="gamma")
        == 1
    )
    assert value(samples, "reconcile_last_run_exit_code") == 1
    assert value(samples, "reconcile_last_run_duration_seconds") == 1.25
    assert value(samples, "reconcile_last_success_timestamp_seconds") == NOW - 600


def test_latency_summary_and_push_counter() -> None:
    samples = parse_samples(exposition(report(), RUN))
    name = "reconcile_replication_push_duration_seconds"
    assert value(samples, name, server="alpha", peer="gamma", quantile="0.5") == 0.2
    assert value(samples, name, server="alpha", peer="gamma", quantile="0.99") == 2.0
    assert value(samples, f"{name}_count", server="alpha", peer="gamma") == 4
    assert value(samples, f"{name}_sum", server="alpha", peer="gamma") == 2.5
    total = "reconcile_replication_pushes_total"
    assert value(samples, total, server="alpha", peer="gamma", result="unreachable") == 3
    assert value(samples, total, server="alpha", peer="gamma", result="ok") == 1
    assert math.isnan(quantile((), 0.5))
    assert quantile((3.0, 1.0, 2.0), 0.5) == 2.0


def test_label_values_and_help_are_escaped() -> None:
    family = Family(
        "x_info",
        "gauge",
        'back\\slash and\nnewline "quoted"',
        (Sample((("path", 'a\\b"c\nd'),), 1.5),),
    )
    assert render([family]) == (
        '# HELP x_info back\\\\slash and\\nnewline "quoted"\n'
        "# TYPE x_info gauge\n"
        'x_info{path="a\\\\b\\"c\\nd"} 1.5\n'
    )
    samples = parse_samples(render([family]))
    assert value(samples, "x_info", path='a\\b"c\nd') == 1.5


def test_values_nan_and_infinity() -> None:
    family = Family(
        "y", "gauge", "h", (Sample((("k", "n"),), math.nan), Sample((("k", "i"),), math.inf))
    )
    assert render([family]).splitlines()[2:] == ['y{k="n"} NaN', 'y{k="i"} +Inf']


@pytest.mark.parametrize(
    ("name", "kind", "labels"),
    [("bad-name", "gauge", ()), ("pushes", "counter", ()), ("ok", "gauge", (("__x", "v"),))],
)
def test_invalid_names_are_refused(
    name: str, kind: str, labels: tuple[tuple[str, str], ...]
) -> None:
    with pytest.raises(ValueError):
        Family(name, kind, "h", (Sample(labels, 1),))  # type: ignore[arg-type]


def test_a_failed_run_keeps_the_previous_success_and_a_run_without_facts_only_its_own() -> None:
    text = exposition(None, RUN)
    samples = parse_samples(text)
    assert previous_last_success(text) == NOW - 600
    assert {name for name, _ in samples} == {
        "reconcile_last_run_exit_code",
        "reconcile_last_run_timestamp_seconds",
        "reconcile_last_run_duration_seconds",
        "reconcile_last_success_timestamp_seconds",
    }
    never = exposition(None, RunInfo(NOW, 1.0, 1, None))
    assert previous_last_success(never) is None
    assert value(parse_samples(never), "reconcile_last_success_timestamp_seconds") == 0


def test_apply_runs_add_changes_and_conflicts_per_server() -> None:
    run = RunInfo(NOW, 2.0, 3, NOW, applied=4, failed=1, conflicts={"beta": 2})
    samples = parse_samples(exposition(report(), run))
    assert value(samples, "reconcile_last_run_changes", result="applied") == 4
    assert value(samples, "reconcile_last_run_changes", result="failed") == 1
    assert value(samples, "reconcile_conflicts", server="beta") == 2
    assert value(samples, "reconcile_conflicts", server="alpha") == 0


def test_series_do_not_grow_with_repositories() -> None:
    small = len(parse_samples(exposition(report(), RUN)))
    many = StatusReport(
        repositories=10_000,
        refs=tuple(
            RefState(f"r{i}", "refs/heads/main", {"alpha": B, "beta": A}, tip=B) for i in range(500)
        ),
        servers=report().servers,
    )
    assert len(parse_samples(exposition(many, RUN))) == small


@requires_promtool
def test_promtool_accepts_the_exposition() -> None:
    check_metrics(exposition(report(), RUN))
    check_metrics(exposition(None, RUN))
    run = RunInfo(NOW, 2.0, 0, NOW, applied=0, failed=0)
    check_metrics(render(status_families(report(), run)))
