"""The parsed-file cache: same bytes give the same document; other bytes are parsed."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.desired import source
from reconciler.errors import ConfigErrors, ReconcilerError

TEXT = "servers:\n  alpha:\n    url: local:/srv/alpha\nrepositories:\n  one: {}\n"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv(source.CACHE_ENV, str(directory))
    return directory


def test_a_file_parsed_again_comes_from_the_cache(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(TEXT)
    first = source.read_yaml(path, "a.yaml")
    assert len(list(cache.glob("*.marshal"))) == 1
    second = source.read_yaml(path, "shown-as.yaml")
    assert second.data == first.data
    assert second.key_positions == first.key_positions
    assert second.value_positions == first.value_positions
    assert second.file == "shown-as.yaml"
    assert second.location(("repositories", "one"), key=True).line == 5


def test_changed_bytes_are_parsed_afresh(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(TEXT)
    source.read_yaml(path, "a.yaml")
    path.write_text(TEXT + "  two: {}\n")
    document = source.read_yaml(path, "a.yaml")
    assert set(document.data["repositories"]) == {"one", "two"}


def test_a_broken_cache_file_is_ignored(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(TEXT)
    source.read_yaml(path, "a.yaml")
    for stored in cache.glob("*.marshal"):
        stored.write_bytes(b"\x00garbage")
    assert source.read_yaml(path, "a.yaml").data["servers"]["alpha"]["url"] == "local:/srv/alpha"


def test_files_with_problems_are_not_cached(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("a: &x 1\nb: *x\n")
    for _ in range(2):
        with pytest.raises((ReconcilerError, ConfigErrors)):
            source.read_yaml(path, "a.yaml")
    assert not list(cache.glob("*.marshal"))


def test_the_cache_can_be_turned_off(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(source.CACHE_ENV, "off")
    path = tmp_path / "a.yaml"
    path.write_text(TEXT)
    source.read_yaml(path, "a.yaml")
    assert not cache.exists()
