"""A status report never claims more than it read."""

from __future__ import annotations

from reconciler.refs import RefState
from reconciler.status import PeerQueue, ServerHealth, StatusReport, ref_state_on

A, B, C = "a" * 40, "b" * 40, "c" * 40


def health(name: str, **kwargs: object) -> ServerHealth:
    return ServerHealth(name, True, **kwargs)  # type: ignore[arg-type]


def test_all_servers_read_says_plainly_what_is_in_sync() -> None:
    report = StatusReport(2, (), (health("alpha"), health("beta")))
    assert report.summary() == "2 repositories, 2 in sync; 0 queued updates"
    data = report.to_json()
    assert data["complete"] is True and data["servers_unknown"] == []
    assert data["in_sync_repositories"] == 2


def test_an_unreachable_server_makes_the_rest_unknown_not_in_sync() -> None:
    report = StatusReport(
        2,
        (),
        (
            health("alpha", queue_depth=1, queues={"gamma": PeerQueue(1, 5.0)}),
            health("beta"),
            ServerHealth("gamma", False, error="server gamma: cannot connect"),
        ),
    )
    summary = report.summary()
    assert summary.startswith("2 repositories, 2 in sync on alpha, beta;")
    assert "1 queued update on alpha, beta" in summary
    assert "unknown: gamma" in summary
    assert "2 in sync;" not in summary
    data = report.to_json()
    assert data["complete"] is False
    assert data["servers_read"] == ["alpha", "beta"]
    assert data["servers_unknown"] == ["gamma"]
    gamma = data["servers"][2]
    assert gamma["reachable"] is False
    # Unknown, not zero.
    assert gamma["queue_depth"] is None and gamma["refs"] is None and gamma["stale_hooks"] is None
    assert data["servers"][0]["queues"] == {
        "gamma": {"entries": 1, "oldest": 5.0, "needs_review": 0}
    }
    assert report.exit_code() == 1


def test_nothing_read_claims_nothing() -> None:
    report = StatusReport(
        3, (), (ServerHealth("alpha", False, error="x"), ServerHealth("beta", False, error="y"))
    )
    assert report.summary() == "3 repositories; nothing is known: alpha, beta unreachable"
    assert report.in_sync_repositories == 0


def test_a_repository_missing_somewhere_is_not_in_sync() -> None:
    report = StatusReport(
        3,
        (RefState("product", "refs/heads/main", {"alpha": A, "beta": None}, tip=A),),
        (health("alpha"), health("beta", missing_repositories=("docs",))),
        missing_somewhere=("docs",),
    )
    assert report.in_sync_repositories == 1
    assert "1 missing on some server" in report.summary()


def test_ref_states_per_server() -> None:
    behind = RefState("p", "refs/heads/main", {"alpha": B, "beta": A, "gamma": None}, tip=B)
    assert [ref_state_on(behind, s) for s in ("alpha", "beta", "gamma", "delta")] == [
        "in_sync",
        "behind",
        "missing",
        None,
    ]
    diverged = RefState("p", "refs/heads/main", {"alpha": B, "beta": C}, tip=None)
    assert {ref_state_on(diverged, s) for s in ("alpha", "beta")} == {"diverged"}
