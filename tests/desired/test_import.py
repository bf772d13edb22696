"""``reconcile import``: cluster.d/ from gitosis.conf grants the same access.

Access is compared the way gitosis decides it (reconciler.gitosis.config) for
every user who has a key in keydir/ (nobody else can log in) and every
repository. The servers' own users, members of the hand-made mirror group, are
the one intended difference: they get write access to every mirrored repository
but the admin one, which the mirror group never gets (only reconcile apply sends
it to the servers).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.cli import main
from reconciler.desired import load
from reconciler.desired.importer import import_gitosis, write_import
from reconciler.desired.render import render_admin_files
from reconciler.errors import ReconcilerError
from reconciler.gitosis.config import access_mode, parse_config

HAND_MADE = Path(__file__).parent / "import" / "hand-made.conf"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID2SEK7Vsq94T8E38AD5kgitjN388tAgclJW6VSJGmoA"
ADMIN = "gitosis-admin"


def make_checkout(root: Path, conf: str, users: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "gitosis.conf").write_text(conf, encoding="utf-8")
    keydir = root / "keydir"
    keydir.mkdir(exist_ok=True)
    for user in users:
        (keydir / f"{user}.pub").write_text(f"{KEY} {user}\n", encoding="utf-8")
    return root


def import_and_render(root: Path) -> tuple[str, list[str]]:
    """Import, fill in the servers as a person would, load and render."""
    result = import_gitosis(root)
    write_import(root, result)
    servers = result.servers or ["solo"]
    lines = ["servers:"] + [f"  {s}: {{url: 'local:/srv/{s}'}}" for s in servers]
    (root / "cluster.d" / "15-servers.yaml").write_text("\n".join(lines) + "\n")
    desired = load(root)
    return render_admin_files(desired)["gitosis.conf"], desired.mirrored_repositories()


def access(conf: str, users: list[str], repositories: list[str]) -> dict[tuple[str, str], str]:
    config = parse_config(conf)
    return {
        (user, repository): mode
        for user in users
        for repository in repositories
        if (mode := access_mode(config, user, repository)) is not None
    }


def test_hand_made_file_round_trips(tmp_path: Path) -> None:
    users = [
        "admin@desktop",
        "alice@desktop",
        "bob@laptop",
        "carol@laptop",
        "dave@elsewhere",
        "git@master",
        "git@mirror",
    ]
    original = HAND_MADE.read_text(encoding="utf-8")
    root = make_checkout(tmp_path, original, users)
    result = import_gitosis(root)
    assert result.servers == ["master", "mirror"]
    assert any("ghost@nowhere" in w for w in result.warnings)
    assert any("loglevel" in w for w in result.warnings)

    rendered, mirrored = import_and_render(root)
    assert mirrored == ["docs", ADMIN, "product", "tools/build-scripts", "website"]
    repositories = [*mirrored, "unlisted"]
    servers = ["git@master", "git@mirror"]
    people = [u for u in users if u not in servers]
    assert access(rendered, people, repositories) == access(original, people, repositories)
    after = access(rendered, servers, repositories)
    assert after == {(s, r): "writable" for s in servers for r in mirrored if r != ADMIN}
    # The hand-made group let the servers' keys rewrite gitosis-admin; that is dropped,
    # and import says so.
    assert access(original, servers, [ADMIN]) == {(s, ADMIN): "writable" for s in servers}
    assert any("no access to gitosis-admin" in w for w in result.warnings), result.warnings
    # The hand-made mirror group gave the servers less: import adds what mirroring needs.
    assert access(original, servers, ["docs"]) == {}
    assert parse_config(rendered).get("repo product", "owner") == "Alice"


# -- property: any gitosis.conf, imported and rendered, grants the same access --------

PEOPLE = ["alice@desk", "bob", "carol@lap", "dave.d", "erin-x@host"]
SERVER_NAMES = ["master", "mirror", "third"]
SERVER_USERS = [f"git@{s}" for s in SERVER_NAMES]
REPOSITORIES = [ADMIN, "product", "docs", "tools/build", "a/b/c"]
GROUP_NAMES = ["gitosis-admin", "devs", "leads", "readers", "g5"]
MEMBER_POOL = [
    *PEOPLE,
    *SERVER_USERS,
    "ghost",
    "@all",
    "@grp_mirror",
    "@undefined",
    *(f"@{g}" for g in GROUP_NAMES),
]
DESCRIPTIONS = ["The product", "docs for all", "x"]


@st.composite
def gitosis_conf(draw: st.DrawFn) -> tuple[str, set[str]]:
    """A gitosis.conf text and the set of repositories it mentions."""
    subset = st.lists
    mentioned: set[str] = set()
    sections: list[str] = []
    if draw(st.booleans()):
        sections.append("[gitosis]\n")
    if draw(st.booleans()):
        members = draw(subset(st.sampled_from(SERVER_USERS), unique=True))
        writable = draw(subset(st.sampled_from(REPOSITORIES), unique=True))
        mentioned.update(writable)
        sections.append(
            f"[group grp_mirror]\nmembers = {' '.join(members)}\nwritable = {' '.join(writable)}\n"
        )
    names = draw(subset(st.sampled_from(GROUP_NAMES), unique=True, max_size=5))
    for name in names:
        lines = [f"[group {name}]"]
        if draw(st.booleans()):
            lines.append("# a comment inside a group")
        members = draw(subset(st.sampled_from(MEMBER_POOL), unique=True, max_size=6))
        lines.append(f"members = {' '.join(members)}")
        for option in ("writable", "readonly"):
            repos = draw(subset(st.sampled_from(REPOSITORIES), unique=True, max_size=3))
            if repos:
                mentioned.update(repos)
                spelling = "writeable" if option == "writable" and draw(st.booleans()) else option
                lines.append(f"{spelling} = {' '.join(repos)}")
        sections.append("\n".join(lines) + "\n")
    for repository in draw(subset(st.sampled_from(REPOSITORIES), unique=True, max_size=2)):
        mentioned.add(repository)
        description = draw(st.sampled_from(DESCRIPTIONS))
        sections.append(f"[repo {repository}]\ndescription = {description}\n")
    order = draw(st.permutations(sections))
    return "\n; separator comment\n".join(order), mentioned


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(generated=gitosis_conf())
def test_import_then_render_grants_the_same_access(
    generated: tuple[str, set[str]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    original, mentioned = generated
    root = make_checkout(tmp_path_factory.mktemp("admin"), original, PEOPLE + SERVER_USERS)
    result = import_gitosis(root)
    rendered, mirrored = import_and_render(root)

    assert set(mirrored) == mentioned | {ADMIN}
    repositories = [*REPOSITORIES, "unlisted"]
    servers = [f"git@{s}" for s in result.servers]
    others = [u for u in PEOPLE + SERVER_USERS if u not in servers]
    before = access(original, others, repositories)
    assert access(rendered, others, repositories) == before
    mirror_writable = parse_config(rendered).get("group grp_mirror", "writable", fallback="")
    assert ADMIN not in mirror_writable.split()
    for server in servers:
        for repository in repositories:
            if repository == ADMIN:
                continue  # the mirror group no longer grants it; other groups may
            expected = (
                "writable"
                if repository in mirrored
                else access(original, [server], [repository]).get((server, repository))
            )
            assert access(rendered, [server], [repository]).get((server, repository)) == expected


def test_import_refuses_existing_cluster_d(tmp_path: Path) -> None:
    root = make_checkout(tmp_path, HAND_MADE.read_text(), ["admin@desktop"])
    (root / "cluster.d").mkdir()
    (root / "cluster.d" / "mine.yaml").write_text("cluster: {name: mine}\n")
    with pytest.raises(ReconcilerError, match="already holds YAML"):
        write_import(root, import_gitosis(root))
    assert (root / "cluster.d" / "mine.yaml").read_text() == "cluster: {name: mine}\n"


@pytest.mark.parametrize(
    ("conf", "fragment"),
    [
        (None, "there is no gitosis.conf"),
        ("members = x\n", "cannot be read as gitosis reads it"),
        ("[group two words]\nmembers = a\n", "cannot be used in cluster.d/"),
    ],
)
def test_import_errors_are_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], conf: str | None, fragment: str
) -> None:
    if conf is not None:
        (tmp_path / "gitosis.conf").write_text(conf)
    assert main(["import", "-C", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert fragment in err
    assert "Traceback" not in err
    assert not (tmp_path / "cluster.d").exists()


def test_import_command_writes_cluster_d(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(HAND_MADE, tmp_path / "gitosis.conf")
    assert main(["import", "-C", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "wrote" in out.out
    assert "warning:" in out.err
    assert sorted(p.name for p in (tmp_path / "cluster.d").iterdir()) == [
        "10-cluster.yaml",
        "20-repositories.yaml",
        "30-groups.yaml",
    ]
    assert "#   master:" in (tmp_path / "cluster.d" / "10-cluster.yaml").read_text()
