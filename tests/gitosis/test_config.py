"""gitosis.conf parsing and group resolution, as gitosis decides them."""

from __future__ import annotations

import pytest

from reconciler.gitosis.config import access_mode, have_access, membership, parse_config

CONF = """\
[gitosis]

[group gitosis-admin]
members = admin@desk
writable = gitosis-admin

[group devs]
members = alice@desk bob@lap
writable = product tools/build ; inline comment

[group readers]
members = @devs carol
readonly = docs

[group everyone]
members = @all
readonly = public

[group cycle-a]
members = @cycle-b dave
writable = a

[group cycle-b]
members = @cycle-a
writable = b

[group typo]
members = erin
writeable = legacy

[group mapped]
members = frank
map writable visible = actual/place
repositories = elsewhere
"""


@pytest.fixture(scope="module")
def config():  # type: ignore[no-untyped-def]
    return parse_config(CONF)


@pytest.mark.parametrize(
    ("user", "path", "expected"),
    [
        ("admin@desk", "gitosis-admin", "writable"),
        ("admin@desk", "gitosis-admin.git", "writable"),
        ("admin@desk", "product", None),
        ("alice@desk", "product", "writable"),
        ("alice@desk", "tools/build", "writable"),
        ("alice@desk", "tools/build.git", "writable"),
        ("alice@desk", "docs", "readonly"),  # through @devs inside readers
        ("carol", "docs", "readonly"),
        ("carol", "product", None),
        ("nobody", "public", "readonly"),  # @all
        ("nobody", "docs", None),
        ("dave", "a", "writable"),
        ("dave", "b", "writable"),  # cycle-b contains @cycle-a; the cycle is cut
        ("erin", "legacy", "writable"),  # the accepted misspelling
        ("frank", "visible", "writable"),
        ("frank", "actual/place", None),
        ("alice@desk", "comment", None),
    ],
)
def test_access_mode(config, user: str, path: str, expected: str | None) -> None:  # type: ignore[no-untyped-def]
    assert access_mode(config, user, path) == expected


def test_membership_order_and_all(config) -> None:  # type: ignore[no-untyped-def]
    assert membership(config, "alice@desk") == ["devs", "readers", "everyone", "all"]


def test_map_uses_group_repositories_base(config) -> None:  # type: ignore[no-untyped-def]
    assert have_access(config, "frank", "writable", "visible") == ("elsewhere", "actual/place")
    assert have_access(config, "alice@desk", "writable", "product") == ("repositories", "product")
