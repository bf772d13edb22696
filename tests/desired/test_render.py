"""Rendering gitosis.conf and keydir/: what gitosis makes of it is what was declared.

Each directory in tests/desired/render/ holds a cluster.d/ (and keydir/) and an
``access.txt`` table of ``user repository access``. The rendered gitosis.conf is
parsed like gitosis parses it, and every user (keydir, inline, server users and
a stranger) is checked against every repository: exactly the listed pairs have
access, with exactly the listed mode.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reconciler.desired import load
from reconciler.desired.render import (
    HEADER,
    edited_by_hand,
    remove_orphaned_key_files,
    render_admin_files,
    stale_files,
    write_admin_files,
)
from reconciler.gitosis.config import access_mode, parse_config

CASES = Path(__file__).parent / "render"
PROJECT = Path(__file__).resolve().parents[2]


def _copy(case: Path, root: Path) -> Path:
    shutil.copytree(case, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("access.txt"))
    return root


def _expected(case: Path) -> dict[tuple[str, str], str]:
    table: dict[tuple[str, str], str] = {}
    for line in (case / "access.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            user, repository, mode = line.split()
            table[user, repository] = mode
    return table


@pytest.mark.parametrize("case", sorted(CASES.iterdir()), ids=lambda p: p.name)
def test_rendered_access_is_declared_access(case: Path, tmp_path: Path) -> None:
    desired = load(_copy(case, tmp_path))
    config = parse_config(render_admin_files(desired)["gitosis.conf"])
    expected = _expected(case)

    users = {*desired.users, *desired.server_users(), "stranger", *(u for u, _ in expected)}
    repositories = {*desired.mirrored_repositories(), "unlisted", *(r for _, r in expected)}
    actual = {
        (user, repository): mode
        for user in sorted(users)
        for repository in sorted(repositories)
        if (mode := access_mode(config, user, repository)) is not None
    }
    assert actual == expected
    # gitosis strips .git before checking; the rendered names are canonical.
    for (user, repository), mode in expected.items():
        assert access_mode(config, user, repository + ".git") == mode


def test_mirror_group_holds_servers_with_keys_and_every_mirrored_repository(
    tmp_path: Path,
) -> None:
    desired = load(_copy(CASES / "nested-groups", tmp_path))
    config = parse_config(render_admin_files(desired)["gitosis.conf"])
    assert config.get("group grp_mirror", "members").split() == ["git@a"]
    # Every mirrored repository but the admin one: a server's key must not be able to
    # rewrite the access rules of every server.
    assert config.get("group grp_mirror", "writable").split() == [
        r for r in desired.mirrored_repositories() if r != "gitosis-admin"
    ]
    assert access_mode(config, "git@a", "gitosis-admin") is None
    assert config.get("repo product", "description") == "Product"
    assert config.get("repo product", "owner") == "Alice"
    assert config.getboolean("repo product", "gitweb") is True
    assert config.getboolean("repo product", "daemon") is False
    assert not config.has_section("repo docs")


def test_rendering_is_deterministic_and_marked_generated(tmp_path: Path) -> None:
    first = render_admin_files(load(_copy(CASES / "nested-groups", tmp_path / "one")))
    # The same input laid out again (other directory, other creation order) renders the same.
    other = tmp_path / "two"
    for path in sorted((CASES / "nested-groups").rglob("*"), reverse=True):
        if path.is_file() and path.name != "access.txt":
            target = other / path.relative_to(CASES / "nested-groups")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    second = render_admin_files(load(other))
    assert first == second
    assert first["gitosis.conf"].startswith(HEADER)
    assert "cluster.d/" in HEADER
    assert sorted(first) == ["gitosis.conf", "keydir/alice@desk.pub", "keydir/carol@lap.pub"]


def test_a_hand_edit_is_told_from_a_render(tmp_path: Path) -> None:
    """The digest line tells an edit from any render, of this cluster.d/ or another."""
    conf = render_admin_files(load(_copy(CASES / "nested-groups", tmp_path / "one")))[
        "gitosis.conf"
    ]
    assert not edited_by_hand(conf)
    assert not edited_by_hand(conf.replace("\n", "\r\n"))  # core.autocrlf's checkout
    assert edited_by_hand((conf + "[group hand]\n").replace("\n", "\r\n"))
    assert edited_by_hand(conf + "[group hand]\nmembers = alice@desk\n")
    assert edited_by_hand(conf.replace("[gitosis]", "[gitosis]\nloglevel = DEBUG"))
    # Without the digest line (an older render, a file nobody rendered): cannot tell.
    older = "".join(line for line in conf.splitlines(True) if not line.startswith("# sha256"))
    assert not edited_by_hand(older + "[group hand]\n")


def test_inline_keys_are_rendered_one_per_line(tmp_path: Path) -> None:
    desired = load(_copy(CASES / "nested-groups", tmp_path))
    files = render_admin_files(desired)
    assert files["keydir/carol@lap.pub"] == desired.users["carol@lap"][0] + "\n"
    assert files["keydir/carol@lap.pub"].startswith("ssh-ed25519 ")


def test_write_only_changed_files_then_fresh(tmp_path: Path) -> None:
    root = _copy(CASES / "nested-groups", tmp_path)
    desired = load(root)
    assert {s.path for s in stale_files(desired)} == {
        "gitosis.conf",
        "keydir/alice@desk.pub",
        "keydir/carol@lap.pub",
    }
    assert sorted(write_admin_files(desired)) == [
        "gitosis.conf",
        "keydir/alice@desk.pub",
        "keydir/carol@lap.pub",
    ]
    conf = root / "gitosis.conf"
    before = conf.stat().st_mtime_ns
    desired = load(root)  # the rendered key files are now in keydir/ too
    assert stale_files(desired) == []
    assert write_admin_files(desired) == []
    assert conf.stat().st_mtime_ns == before
    assert not list(root.glob("**/.*.tmp"))

    conf.write_text(conf.read_text() + "[group sneaky]\nmembers = @all\n")
    assert [s.path for s in stale_files(desired)] == ["gitosis.conf"]
    assert write_admin_files(desired) == ["gitosis.conf"]
    assert "sneaky" not in conf.read_text()


def test_project_example_renders(tmp_path: Path) -> None:
    shutil.copytree(PROJECT / "cluster.d", tmp_path / "cluster.d")
    desired = load(tmp_path)
    config = parse_config(render_admin_files(desired)["gitosis.conf"])
    assert access_mode(config, "alice@desktop", "product") == "writable"
    assert access_mode(config, "alice@desktop", "tools/build-scripts") == "readonly"
    assert access_mode(config, "carol@laptop", "tools/build-scripts") == "writable"
    assert access_mode(config, "admin@desktop", "gitosis-admin") == "writable"
    assert access_mode(config, "bob@laptop", "gitosis-admin") is None


def test_key_files_of_users_who_left_are_removed(tmp_path: Path) -> None:
    root = _copy(CASES / "nested-groups", tmp_path)
    write_admin_files(load(root))
    assert (root / "keydir" / "carol@lap.pub").exists()
    conf = (root / "gitosis.conf").read_text()
    assert "# rendered from cluster.d/: keydir/carol@lap.pub\n" in conf

    users = root / "cluster.d" / "30-users.yaml"
    users.write_text("\n".join(x for x in users.read_text().splitlines() if "carol" not in x))
    groups = root / "cluster.d" / "20-groups.yaml"
    groups.write_text(groups.read_text().replace(", carol@lap]", "]"))

    desired = load(root)
    assert "carol@lap" not in desired.users  # the leftover file is not a user any more
    assert desired.orphaned_key_files == ("keydir/carol@lap.pub",)
    assert "keydir/carol@lap.pub" in {s.path for s in stale_files(desired)}
    assert remove_orphaned_key_files(desired) == ["keydir/carol@lap.pub"]
    write_admin_files(desired)
    desired = load(root)
    assert desired.orphaned_key_files == ()
    assert stale_files(desired) == []
    # A hand-made key file (not listed as rendered) stays a user.
    assert "bob@lap" in desired.users
