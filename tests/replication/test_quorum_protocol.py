"""The quorum protocol, model-checked: concurrent proposals of one ref from the same
old value, with peers down, proposers killed at any step and put-backs lost.

The servers are modelled as values with the lock git holds while a proposer's
proc-receive hook runs; the decision is the hook's own ``decide``. The
schedule of steps (which proposer moves next, who dies, which peer is down) is
drawn by hypothesis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.server.replication import Vote, decide, majority, refusal_line

OLD = "o"


@dataclass
class Proposer:
    server: int
    value: str
    peers: list[int]
    votes: list[Vote] = field(default_factory=list)
    state: str = "proposing"  # proposing, putting back, acked, refused, dead
    moved: list[int] = field(default_factory=list)


def run_protocol(
    n: int, proposers: list[tuple[int, str]], down: set[int], schedule: list[tuple[int, bool]]
) -> tuple[list[str], dict[int, str], list[tuple[str, int]]]:
    values = dict.fromkeys(range(n), OLD)
    locked: dict[int, int] = {}  # server -> proposer holding its ref lock
    ps = []
    for index, (server, value) in enumerate(proposers):
        peers = [s for s in range(n) if s != server]
        ps.append(Proposer(server, value, peers))
        locked[server] = index
    acked: list[str] = []
    holders_at_ack: list[tuple[str, int]] = []

    def step(index: int, die: bool) -> None:
        p = ps[index]
        if p.state in ("acked", "refused", "dead"):
            return
        if die:
            p.state = "dead"  # killed: git aborts its transaction; no put-back
            locked.pop(p.server, None)
            return
        if p.state == "proposing":
            if len(p.votes) < len(p.peers):
                peer = p.peers[len(p.votes)]
                if peer in down:
                    p.votes.append(Vote(str(peer), False, reason="unreachable"))
                elif peer in locked:
                    p.votes.append(Vote(str(peer), False, reason="busy"))
                elif values[peer] == p.value:
                    p.votes.append(Vote(str(peer), True))
                elif values[peer] == OLD:  # the compare-and-swap of the proposal
                    values[peer] = p.value
                    p.votes.append(Vote(str(peer), True, moved=True))
                else:
                    p.votes.append(Vote(str(peer), False, reason="other value"))
                return
            decision = decide(n, p.votes)
            if decision.accept:
                values[p.server] = p.value  # git commits the transaction
                locked.pop(p.server, None)
                p.state = "acked"
                acked.append(p.value)
                holders_at_ack.append((p.value, sum(v == p.value for v in values.values())))
                return
            p.moved = [int(peer) for peer in decision.put_back]
            p.state = "putting back"
            return
        if p.state == "putting back":
            if p.moved:
                peer = p.moved.pop(0)
                if peer not in down and peer not in locked and values[peer] == p.value:
                    values[peer] = OLD  # compare-and-swap on the proposed value
                return
            locked.pop(p.server, None)
            p.state = "refused"

    for index, die in schedule:
        step(index % len(ps), die)
    # Whatever the schedule left undone runs to its end (no more deaths).
    for _ in range(4 * n * len(ps) + 8):
        for index in range(len(ps)):
            step(index, False)
    return acked, values, holders_at_ack


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[int, list[tuple[int, str]], set[int], list[tuple[int, bool]]]:
    n = draw(st.integers(2, 5))
    count = draw(st.integers(1, min(3, n)))
    servers = draw(st.permutations(range(n)))[:count]
    proposers = [(server, f"v{i}") for i, server in enumerate(servers)]
    down = set(
        draw(
            st.sets(
                st.sampled_from([s for s in range(n) if s not in servers])
                if n > count
                else st.nothing(),
                max_size=n - count,
            )
        )
    )
    schedule = draw(
        st.lists(
            st.tuples(
                st.integers(0, count - 1),
                st.booleans().map(lambda b: b and draw(st.integers(0, 9)) == 0),
            ),
            max_size=60,
        )
    )
    return n, proposers, down, schedule


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_never_two_values_acknowledged_and_each_on_a_majority(
    scenario: tuple[int, list[tuple[int, str]], set[int], list[tuple[int, bool]]],
) -> None:
    n, proposers, down, schedule = scenario
    acked, values, holders_at_ack = run_protocol(n, proposers, down, schedule)
    assert len(acked) <= 1, (acked, values)
    for value, holders in holders_at_ack:
        assert holders >= majority(n), (value, holders, values)
    if acked:
        # Put-backs never take an acknowledged value off a majority.
        assert sum(v == acked[0] for v in values.values()) >= majority(n), values


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_repair_following_the_majority_keeps_the_acknowledged_value(
    scenario: tuple[int, list[tuple[int, str]], set[int], list[tuple[int, bool]]],
) -> None:
    n, proposers, down, schedule = scenario
    acked, values, _ = run_protocol(n, proposers, down, schedule)
    counts: dict[str, int] = {}
    for value in values.values():
        counts[value] = counts.get(value, 0) + 1
    winners = [v for v, c in counts.items() if c >= majority(n)]
    assert len(winners) <= 1
    if acked:
        assert winners == acked


def test_decide_counts_this_server_and_puts_back_only_what_it_moved() -> None:
    votes = [Vote("b", True, moved=True), Vote("c", False, reason="unreachable")]
    assert decide(3, votes) == decide(3, votes) and decide(3, votes).accept
    assert decide(3, votes).holders == 2 and decide(3, votes).put_back == ()
    refused = decide(
        5,
        [*votes, Vote("d", False, reason="busy"), Vote("e", False, reason="other value")],
    )
    assert (refused.accept, refused.holders, refused.needed, refused.put_back) == (
        False,
        2,
        3,
        ("b",),
    )
    lone = decide(3, [Vote("b", False, reason="unreachable"), Vote("c", False, reason="timeout")])
    assert (lone.accept, lone.holders, lone.needed, lone.put_back) == (False, 1, 2, ())
    # Two servers: both must hold it.
    assert not decide(2, [Vote("b", False, reason="unreachable")]).accept
    assert decide(2, [Vote("b", True)]).accept
    assert [majority(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]


def test_a_refusal_says_why_and_what_to_do() -> None:
    denied = [
        Vote("b", False, reason="denied", detail="Repository read access denied"),
        Vote("c", False, reason="unreachable"),
    ]
    assert refusal_line("refs/heads/main", decide(3, denied), denied) == (
        "refs/heads/main refused: 1 of 3 servers could take it (b refused access "
        "(Repository read access denied), c unreachable); nothing changed; gitosis there "
        "does not know it yet: run reconcile apply, then push again"
    )
    raced = [Vote("b", False, reason="busy"), Vote("c", False, reason="other value")]
    assert refusal_line("refs/tags/v1", decide(3, raced), raced) == (
        "refs/tags/v1 refused: 1 of 3 servers could take it (b is taking another update "
        "of it, c holds another value); nothing changed; fetch and retry"
    )
