"""``load``'s ``servers_known``: called once, with the servers, only when they are valid;
the load gives the same value or the same errors with it as without it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reconciler.desired import Cluster, Server, load
from reconciler.errors import ConfigErrors
from tests.desired.test_invalid_corpus import _build, _cases

BASE = Path(__file__).parent / "invalid" / "_base" / "00-base.yaml"


def load_recording(root: Path) -> tuple[object, list[tuple[Cluster, dict[str, Server]]]]:
    calls: list[tuple[Cluster, dict[str, Server]]] = []
    try:
        result: object = load(root, lambda cluster, servers: calls.append((cluster, servers)))
    except ConfigErrors as exc:
        result = str(exc)
    return result, calls


def load_plain(root: Path) -> object:
    try:
        return load(root)
    except ConfigErrors as exc:
        return str(exc)


@pytest.mark.parametrize("case", _cases(), ids=lambda p: p.name)
def test_the_same_errors_with_and_without_servers_known(case: Path, tmp_path: Path) -> None:
    _build(case, tmp_path)
    result, calls = load_recording(tmp_path)
    assert isinstance(result, str)
    assert result == load_plain(tmp_path)
    assert len(calls) <= 1


def write(root: Path, text: str) -> None:
    (root / "cluster.d").mkdir(exist_ok=True)
    shutil.copy(BASE, root / "cluster.d" / BASE.name)
    (root / "cluster.d" / "50-more.yaml").write_text(text)


def test_valid_servers_are_known_before_the_rest_fails(tmp_path: Path) -> None:
    write(tmp_path, "repositories:\n  extra:\n    descripton: a typo\n")
    result, calls = load_recording(tmp_path)
    assert "unknown key 'descripton'" in str(result)
    assert len(calls) == 1
    cluster, servers = calls[0]
    assert list(servers) == ["one"]
    # The same values a valid load gives.
    (tmp_path / "cluster.d" / "50-more.yaml").write_text("repositories:\n  extra: {}\n")
    desired = load(tmp_path)
    assert servers == desired.servers
    assert cluster.admin_repository == desired.cluster.admin_repository


def test_a_valid_load_is_the_same_and_calls_once(tmp_path: Path) -> None:
    write(tmp_path, "repositories:\n  extra: {}\n")
    result, calls = load_recording(tmp_path)
    assert result == load(tmp_path)
    assert [servers for _cluster, servers in calls] == [load(tmp_path).servers]


@pytest.mark.parametrize(
    "text",
    [
        "repositories:\n  - [unclosed\n",
        "servers:\n  two:\n    url: ssh://git@127.0.0.1:notaport\n",
        "servers:\n  one:\n    url: ssh://git@127.0.0.1:2222\n",  # defined twice
        "servers:\n  two:\n    url: ssh://git@127.0.0.1:2\n    colour: blue\n",
        "cluster:\n  admin_repository: ../outside\n",
        "cluster:\n  name: again\n",  # cluster: is in the base already
    ],
)
def test_servers_not_known_when_they_or_a_file_are_invalid(tmp_path: Path, text: str) -> None:
    write(tmp_path, text)
    result, calls = load_recording(tmp_path)
    assert isinstance(result, str) and "50-more.yaml" in result
    assert calls == []
