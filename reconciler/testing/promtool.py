"""The real ``promtool`` for tests: check exposition text and rule files, read samples back.

Tests that need it are skipped when it is not installed (as the sshd tests are
without sshd); ``scripts/test.sh`` and ``.ci/run`` install it as root from
Debian's ``prometheus`` package and fail when they cannot.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

PROMTOOL_TIMEOUT = 120.0
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def promtool() -> str | None:
    return shutil.which("promtool")


def unavailable_reason() -> str | None:
    if promtool() is None:
        return "promtool is not installed (apt-get install --no-install-recommends prometheus)"
    return None


requires_promtool = pytest.mark.skipif(
    unavailable_reason() is not None, reason=unavailable_reason() or ""
)


def run_promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool() or "promtool", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT,
        check=False,
    )


def check_metrics(text: str) -> None:
    """``promtool check metrics`` (parse and lint) must pass on ``text``."""
    done = run_promtool("check", "metrics", stdin=text)
    if done.returncode != 0:
        raise AssertionError(f"promtool check metrics:\n{done.stdout}{done.stderr}\n{text}")


def check_rules(path: Path) -> str:
    done = run_promtool("check", "rules", str(path))
    if done.returncode != 0:
        raise AssertionError(f"promtool check rules {path}:\n{done.stdout}{done.stderr}")
    return done.stdout


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def parse_samples(text: str) -> Samples:
    """Every sample of exposition text: (name, labels) -> value."""
    samples: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise AssertionError(f"not a sample line: {line!r}")
        name, labels, value = match.groups()
        pairs = frozenset((k, _unescape(v)) for k, v in _LABEL.findall(labels or ""))
        samples[(name, pairs)] = float(value)
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def series(samples: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return {key: v for (n, key), v in samples.items() if n == name and wanted <= key}
