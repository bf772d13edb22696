"""Prometheus metrics of a status report, in the text exposition format (0.0.4).

Pure: typed values in (a ``StatusReport``, a ``RunInfo``), text out. Writing the
text to node_exporter's textfile directory is the CLI's part
(``reconciler.commands.textfile``).

Series are per server (and per peer, state or result), never per repository or
ref, so 10,000 repositories cost no more series than ten. A server that was not
reached has ``reconcile_server_up 0`` and no other series: its queue, refs and
hooks are unknown, not zero.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from reconciler.facts import PushStats
from reconciler.status import REF_STATES, PeerQueue, StatusReport

MetricType = Literal["gauge", "counter", "summary"]
QUANTILES = (0.5, 0.9, 0.99)
LAST_SUCCESS = "reconcile_last_success_timestamp_seconds"

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_SUFFIXES = ("", "_sum", "_count")


@dataclass(frozen=True)
class Sample:
    labels: tuple[tuple[str, str], ...]
    value: float
    suffix: str = ""  # "_sum" or "_count" of a summary


@dataclass(frozen=True)
class Family:
    """One metric: its name, type and help, and every series of it."""

    name: str
    type: MetricType
    help: str
    samples: tuple[Sample, ...] = ()

    def __post_init__(self) -> None:
        if not _METRIC_NAME.fullmatch(self.name):
            raise ValueError(f"not a Prometheus metric name: {self.name!r}")
        if self.type == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"a counter's name ends in _total: {self.name!r}")
        for sample in self.samples:
            if sample.suffix not in _SUFFIXES or (sample.suffix and self.type != "summary"):
                raise ValueError(f"{self.name}: unexpected sample suffix {sample.suffix!r}")
            for label, _value in sample.labels:
                if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
                    raise ValueError(f"{self.name}: not a label name: {label!r}")


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def render(families: Iterable[Family]) -> str:
    """The exposition text: ``# HELP`` and ``# TYPE`` before each family's series."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for sample in family.samples:
            labels = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sample.labels)
            lines.append(
                f"{family.name}{sample.suffix}{'{' + labels + '}' if labels else ''} "
                f"{format_value(sample.value)}"
            )
    return "".join(line + "\n" for line in lines)


def previous_last_success(text: str) -> float | None:
    """The last success timestamp an earlier run wrote, from its exposition text."""
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name == LAST_SUCCESS:
            try:
                value = float(rest.split()[0])
            except (IndexError, ValueError):
                return None
            return value if value > 0 and math.isfinite(value) else None
    return None


def run_succeeded(exit_code: int) -> bool:
    """A run succeeded when it read every server and did all it set out to do.

    Exit 2 (repairs pending, from status) and 3 (conflicts for a person) are
    successful runs that found work; their gauges say what.
    """
    return exit_code in (0, 2, 3)


@dataclass(frozen=True)
class RunInfo:
    """The run that writes the metrics."""

    finished: float  # unix time
    duration: float  # seconds
    exit_code: int
    last_success: float | None  # this run's end when it succeeded, else the previous one
    applied: int | None = None  # apply: changes made, and changes that failed
    failed: int | None = None
    conflicts: Mapping[str, int] = field(default_factory=dict)  # apply: per server


def quantile(values: Sequence[float], q: float) -> float:
    """The nearest-rank quantile; NaN without values (as Prometheus summaries do)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _gauge(name: str, help: str, samples: Iterable[tuple[Mapping[str, str], float]]) -> Family:
    return Family(
        name,
        "gauge",
        help,
        tuple(Sample(tuple(labels.items()), value) for labels, value in samples),
    )


def _push_families(pushes: Mapping[tuple[str, str], PushStats]) -> list[Family]:
    duration: list[Sample] = []
    totals: list[Sample] = []
    for (server, peer), stats in sorted(pushes.items()):
        labels = (("server", server), ("peer", peer))
        for q in QUANTILES:
            duration.append(Sample((*labels, ("quantile", f"{q:g}")), quantile(stats.recent, q)))
        duration.append(Sample(labels, stats.sum, "_sum"))
        duration.append(Sample(labels, stats.count, "_count"))
        for result, count in sorted(stats.results.items()):
            totals.append(Sample((*labels, ("result", result)), count))
    return [
        Family(
            "reconcile_replication_push_duration_seconds",
            "summary",
            "Duration of the replication hook's pushes from server to peer; quantiles over "
            "the pushes of the last hour (at most 128), sum and count since the record began.",
            tuple(duration),
        ),
        Family(
            "reconcile_replication_pushes_total",
            "counter",
            "Pushes of the replication hook from server to peer, by result (ok, or the "
            "reason the peer did not take the update).",
            tuple(totals),
        ),
    ]


def status_families(report: StatusReport | None, run: RunInfo) -> list[Family]:
    """Every metric of one run; ``report`` is None when the run failed before it read
    any server (then only the run's own metrics are known)."""
    families: list[Family] = []
    if report is not None:
        read = [s for s in report.servers if s.reachable]

        def per_queue(value: Callable[[PeerQueue], float]) -> list[tuple[dict[str, str], float]]:
            """One sample per (server, peer) replication queue."""
            return [
                ({"server": s.server, "peer": peer}, value(q))
                for s in read
                for peer, q in sorted(s.queues.items())
            ]

        families += [
            _gauge(
                "reconcile_server_up",
                "1 when the server was reached and read in this run, else 0.",
                [({"server": s.server}, 1 if s.reachable else 0) for s in report.servers],
            ),
            _gauge(
                "reconcile_repositories",
                "Repositories declared in cluster.d/ (mirrored to every server).",
                [({}, report.repositories)],
            ),
            _gauge(
                "reconcile_repositories_missing",
                "Declared repositories that do not exist on the server.",
                [({"server": s.server}, len(s.missing_repositories)) for s in read],
            ),
            _gauge(
                "reconcile_refs",
                "Replicated refs on the server by state: in_sync, behind (an ancestor of the "
                "tip), missing (absent here), diverged (on a different line of history), "
                "aborted (values no majority took, kept under refs/reconciler/aborted/).",
                (
                    ({"server": s.server, "state": state}, s.refs.get(state, 0))
                    for s in read
                    for state in REF_STATES
                ),
            ),
            _gauge(
                "reconcile_hooks_not_current",
                "Mirrored repositories on the server whose post-receive hook is missing or "
                "not the current replication hook.",
                [({"server": s.server}, len(s.stale_hooks)) for s in read],
            ),
            _gauge(
                "reconcile_hooks_foreign",
                "Mirrored repositories on the server whose post-receive hook the reconciler "
                "did not write (a conflict until replaced with --replace-foreign).",
                [({"server": s.server}, len(s.foreign_hooks)) for s in read],
            ),
            _gauge(
                "reconcile_replication_queue_entries",
                "Ref updates queued on the server that the peer has not taken.",
                per_queue(lambda q: q.entries),
            ),
            _gauge(
                "reconcile_replication_queue_oldest_age_seconds",
                "Age of the oldest update queued on the server for the peer (0 when none).",
                per_queue(
                    lambda q: 0 if q.oldest is None else max(0.0, round(run.finished - q.oldest, 3))
                ),
            ),
            _gauge(
                "reconcile_replication_queue_review_entries",
                "Queued updates no retry will deliver (diverged, rejected, missing "
                "repository): they wait for a person.",
                per_queue(lambda q: q.needs_review),
            ),
            _gauge(
                "reconcile_replication_queue_unreadable_files",
                "Files in the server's replication queue that are not valid entries.",
                [({"server": s.server}, s.queue_problems) for s in read],
            ),
        ]
        families += _push_families(
            {(s.server, peer): stats for s in read for peer, stats in s.pushes.items()}
        )
    if run.applied is not None:
        families.append(
            _gauge(
                "reconcile_last_run_changes",
                "Changes the last apply made (result=applied) or tried and failed (result=failed).",
                [({"result": "applied"}, run.applied), ({"result": "failed"}, run.failed or 0)],
            )
        )
        servers = [s.server for s in report.servers] if report is not None else []
        families.append(
            _gauge(
                "reconcile_conflicts",
                "Conflicts the last apply left for a person (diverged refs, foreign hooks "
                "or remotes, refused histories), by server.",
                [
                    ({"server": name}, run.conflicts.get(name, 0))
                    for name in dict.fromkeys([*servers, *sorted(run.conflicts)])
                ],
            ),
        )
    families += [
        _gauge(
            "reconcile_last_run_exit_code",
            "Exit code of the last run: 0 in sync, 1 error, 2 repairs pending, 3 conflicts.",
            [({}, run.exit_code)],
        ),
        _gauge(
            "reconcile_last_run_timestamp_seconds",
            "When the last run ended (unix time).",
            [({}, round(run.finished, 3))],
        ),
        _gauge(
            "reconcile_last_run_duration_seconds",
            "How long the last run took.",
            [({}, round(run.duration, 3))],
        ),
        _gauge(
            LAST_SUCCESS,
            "When a run last ended without error (unix time; 0: never): read every server "
            "and every change it tried succeeded.",
            [({}, round(run.last_success or 0, 3))],
        ),
    ]
    return families


def exposition(report: StatusReport | None, run: RunInfo) -> str:
    return render(status_families(report, run))
