"""Reliability fixtures: the sshd cluster fixtures and a figures report.

Every scenario reports its figures (pushes, faults, inputs tried, commits lost)
through ``report``: each line is printed (visible with ``-s``), appended to
``reliability-figures.txt`` in pytest's base temporary directory, and all lines are
repeated in the terminal summary at the end of the session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.testing.pytest_plugin import (  # noqa: F401 - fixtures
    leftovers,
    ssh_cluster,
    ssh_cluster_factory,
)

FIGURES: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def _no_cluster_left_behind() -> Iterator[None]:
    """After the session no sshd of ours may run and every test user must be gone."""
    yield
    problems = leftovers()
    assert not problems, "\n".join(problems)


@pytest.fixture
def report(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., None]:
    """``report(**figures)``: one line of figures for this scenario."""
    results = Path(tmp_path_factory.getbasetemp()) / "reliability-figures.txt"
    name = request.node.name

    def emit(**figures: object) -> None:
        line = f"{name}: " + ", ".join(f"{key}={value}" for key, value in figures.items())
        FIGURES.append(line)
        print(line)
        with results.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    return emit


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if FIGURES:
        terminalreporter.section("reliability figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
