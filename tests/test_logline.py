"""Log lines of unattended runs: logfmt and JSON lines with the same fields."""

from __future__ import annotations

import json

import pytest

from reconciler.logline import (
    LogEvent,
    action_event,
    format_event,
    logfmt_value,
    note_event,
    pending_event,
)
from reconciler.planning.model import Action, Note, Phase

WHEN = 1_764_064_800.0  # 2025-11-25T10:00:00Z
PUSH = Action(
    "beta",
    "ref",
    "change",
    "product -> gamma",
    "product: push refs/heads/main on gamma (from beta)",
    Phase.REFS,
)


def test_a_change_as_logfmt() -> None:
    line = format_event(action_event(PUSH, True, "", WHEN))
    assert line == (
        "time=2025-11-25T10:00:00Z level=info server=beta repository=product subject=ref "
        'action=change result=ok msg="product: push refs/heads/main on gamma (from beta)"'
    )


def test_a_failure_as_logfmt_and_json_carry_the_same_fields() -> None:
    event = action_event(PUSH, False, 'push to gamma failed: "refused"\nsecond line', WHEN)
    line = format_event(event)
    assert line.startswith("time=2025-11-25T10:00:00Z level=error server=beta ")
    assert " result=failed " in line
    assert line.endswith('error="push to gamma failed: \\"refused\\"\\nsecond line"')
    assert "\n" not in line
    data = json.loads(format_event(event, "json"))
    assert data == {
        "time": "2025-11-25T10:00:00Z",
        "level": "error",
        "server": "beta",
        "repository": "product",
        "subject": "ref",
        "action": "change",
        "result": "failed",
        "msg": "product: push refs/heads/main on gamma (from beta)",
        "error": 'push to gamma failed: "refused"\nsecond line',
    }


@pytest.mark.parametrize(
    ("subject", "target", "repository"),
    [
        ("hook", "tools/build post-receive", "tools/build"),
        ("remote", "product remote gamma", "product"),
        ("repository", "product", "product"),
        ("admin", "gitosis-admin", "gitosis-admin"),
        ("known_hosts", "~/.ssh/known_hosts", ""),
        ("queue", "replication queue", ""),
    ],
)
def test_repository_field(subject: str, target: str, repository: str) -> None:
    action = Action("alpha", subject, "create", target, "d", Phase.CONFIGURATION)
    fields = dict(action_event(action, True, "", WHEN).fields())
    assert fields.get("repository", "") == repository
    assert "repository=" in format_event(action_event(action, True, "", WHEN)) or not repository


def test_conflicts_errors_and_pending_actions() -> None:
    conflict = Note("beta", "hook", "product post-receive", "conflict", "foreign hook")
    line = format_event(note_event(conflict, WHEN))
    assert "level=warning server=beta repository=product subject=hook result=conflict" in line
    error = Note("gamma", "server", "gamma", "error", "server gamma: cannot connect")
    assert " level=error server=gamma " in format_event(note_event(error, WHEN))
    assert " result=pending " in format_event(pending_event(PUSH, WHEN))


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("alpha", "alpha"),
        ("refs/heads/main", "refs/heads/main"),
        ("", '""'),
        ("two words", '"two words"'),
        ("a=b", '"a=b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("tab\there", '"tab\\there"'),
    ],
)
def test_logfmt_quoting(raw: str, shown: str) -> None:
    assert logfmt_value(raw) == shown


def test_empty_fields_are_left_out() -> None:
    line = format_event(LogEvent(level="info", message="fast-forwarded", time=WHEN))
    assert line == "time=2025-11-25T10:00:00Z level=info msg=fast-forwarded"
