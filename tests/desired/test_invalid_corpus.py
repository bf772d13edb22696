"""Every configuration in tests/desired/invalid/ is refused with the right place and reason.

A case is either one YAML file, added to the valid ``_base/`` configuration as
``cluster.d/50-case.yaml`` (unless it says ``# base: no``) with ``# expect:
LINE:COLUMN: FRAGMENT`` lines (or ``# expect: cluster.d: FRAGMENT`` for the
directory), or a directory with ``cluster.d/``, optional ``keydir/`` and an
``expect`` file of ``PATH[:LINE[:COLUMN]]: FRAGMENT`` lines, merged with the base.
Every expected error must be reported, by ``load`` and by ``reconcile validate``,
which exits 1 without a traceback.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.desired import load
from reconciler.errors import ConfigErrors, Location

CORPUS = Path(__file__).parent / "invalid"
BASE = CORPUS / "_base" / "00-base.yaml"
CASE_FILE = "50-case.yaml"


@dataclass(frozen=True)
class Expected:
    path: str
    line: int
    column: int
    fragment: str

    def matches(self, location: Location | None, message: str) -> bool:
        if location is None or location.file != self.path:
            return False
        if self.line and location.line != self.line:
            return False
        if self.column and location.column != self.column:
            return False
        return self.fragment in message


_EXPECT_RE = re.compile(r"(?P<path>[^:]+)(?::(?P<line>\d+))?(?::(?P<column>\d+))?: (?P<frag>.+)")


def _parse_expect(text: str, default_path: str | None = None) -> Expected:
    if default_path is not None and re.match(r"\d", text):
        text = f"{default_path}:{text}"
    match = _EXPECT_RE.fullmatch(text.strip())
    assert match is not None, f"bad expectation {text!r}"
    return Expected(
        match["path"], int(match["line"] or 0), int(match["column"] or 0), match["frag"]
    )


def _cases() -> list[Path]:
    return sorted(p for p in CORPUS.iterdir() if not p.name.startswith("_"))


def _build(case: Path, root: Path) -> list[Expected]:
    cluster_d = root / "cluster.d"
    cluster_d.mkdir(parents=True)
    expected: list[Expected] = []
    if case.is_dir():
        shutil.copy(BASE, cluster_d / BASE.name)
        for sub in ("cluster.d", "keydir"):
            if (case / sub).is_dir():
                shutil.copytree(case / sub, root / sub, dirs_exist_ok=True)
        lines = (case / "expect").read_text(encoding="utf-8").splitlines()
        expected = [_parse_expect(line) for line in lines if line.strip()]
    else:
        text = case.read_text(encoding="utf-8")
        if "# base: no" not in text:
            shutil.copy(BASE, cluster_d / BASE.name)
        shutil.copy(case, cluster_d / CASE_FILE)
        for line in text.splitlines():
            if line.startswith("# expect: "):
                expected.append(
                    _parse_expect(line[len("# expect: ") :], default_path=f"cluster.d/{CASE_FILE}")
                )
    assert expected, f"{case.name} expects nothing"
    return expected


def test_corpus_is_large_enough() -> None:
    assert len(_cases()) >= 25


def test_base_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cluster.d").mkdir()
    shutil.copy(BASE, tmp_path / "cluster.d" / BASE.name)
    monkeypatch.chdir(tmp_path)
    desired = load(Path("."))
    assert list(desired.servers) == ["one"]


@pytest.mark.parametrize("case", _cases(), ids=lambda p: p.name)
def test_invalid_configuration(
    case: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    expected = _build(case, tmp_path)
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ConfigErrors) as caught:
        load(Path("."))
    reported = [(error.location, error.message) for error in caught.value.errors]
    for item in expected:
        assert any(item.matches(loc, msg) for loc, msg in reported), (
            f"{case.name}: expected {item} among:\n"
            + "\n".join(f"{loc}: {msg}" for loc, msg in reported)
        )
    for location, message in reported:
        assert location is not None and location.file, message
        assert "\n" not in message

    assert main(["validate", "-C", "."]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for item in expected:
        where = item.path + (f":{item.line}" if item.line else "")
        assert any(line.startswith(where) and item.fragment in line for line in err.splitlines())
