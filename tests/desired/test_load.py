"""Loading valid cluster.d/ directories into Desired."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.desired import Desired, ServerURL, load
from reconciler.desired.model import parse_server_url
from reconciler.desired.source import MAX_FILE_BYTES
from reconciler.errors import ConfigErrors

PROJECT = Path(__file__).resolve().parents[2]
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID2SEK7Vsq94T8E38AD5kgitjN388tAgclJW6VSJGmoA a@host"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHzSIbUF7CyUaJDWS7msDxbc1Ewf7piZfiy/8V2UKkNF b@host"


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def test_project_example_loads() -> None:
    desired = load(PROJECT)
    assert desired.cluster.name == "demo"
    assert set(desired.servers) == {"alpha", "beta", "gamma"}
    assert all(server.url.kind == "local" for server in desired.servers.values())
    assert "tools/build-scripts" in desired.repositories
    assert desired.mirrored_repositories() == ["gitosis-admin", "product", "tools/build-scripts"]
    assert desired.server_user("alpha") == "git@alpha"


def test_defaults_and_merge_order(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "cluster.d/20-b.yaml": """\
                servers:
                  zeta: {url: "ssh://zeta.example.com"}
                groups:
                  later: {members: ["@earlier", git@zeta]}
                """,
            "cluster.d/10-a.yaml": """\
                cluster: {name: c1}
                servers:
                  alpha:
                    url: ssh://git@alpha.example.com:2222
                    peer_url: ssh://git@10.0.0.1
                repositories:
                  product.git: {description: Main}
                  tools/build: ~
                groups:
                  earlier:
                    members: [b@host]
                    writable: [product.git, product]
                """,
            "keydir/b@host.pub": KEY_B + "\n\n",
            "keydir/.hidden.pub": "garbage",
            "keydir/README": "not a key",
        },
    )
    desired = load(tmp_path)
    assert isinstance(desired, Desired)
    assert desired.root == tmp_path.absolute()
    assert desired.cluster.admin_repository == "gitosis-admin"
    assert desired.cluster.mirror_group == "grp_mirror"
    assert desired.cluster.replication.mode == "sync"
    assert desired.cluster.replication.timeout == 30
    assert list(desired.servers) == ["alpha", "zeta"]
    alpha = desired.servers["alpha"]
    assert alpha.url == ServerURL("ssh", user="git", host="alpha.example.com", port=2222)
    assert str(alpha.peer_url) == "ssh://git@10.0.0.1"
    assert alpha.repositories == "repositories"
    assert desired.servers["zeta"].peer_url == desired.servers["zeta"].url
    assert list(desired.repositories) == ["product", "tools/build"]
    assert desired.repositories["product"].description == "Main"
    assert list(desired.groups) == ["earlier", "later"]
    assert desired.groups["earlier"].writable == ("product",)
    assert desired.users == {"b@host": (KEY_B,)}
    assert desired.inline_users == frozenset()
    assert str(desired.locations[("servers", "zeta")]).endswith("cluster.d/20-b.yaml:2:3")


def test_inline_user_wins_over_its_rendered_key_file(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "cluster.d/c.yaml": f"""\
                cluster: {{name: c}}
                servers: {{one: {{url: "local:srv/one"}}}}
                users:
                  a@host: [{KEY_A}]
                """,
            "keydir/a@host.pub": KEY_B + "\n",
        },
    )
    desired = load(tmp_path)
    assert desired.users["a@host"] == (KEY_A,)
    assert desired.inline_users == {"a@host"}
    assert desired.servers["one"].url.path == str(tmp_path.absolute() / "srv" / "one")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ssh://host", ServerURL("ssh", host="host")),
        ("ssh://git@host.example.com", ServerURL("ssh", user="git", host="host.example.com")),
        ("ssh://git@127.0.0.1:2201", ServerURL("ssh", user="git", host="127.0.0.1", port=2201)),
        ("ssh://git@[::1]:22", ServerURL("ssh", user="git", host="::1", port=22)),
        ("ssh://host/", ServerURL("ssh", host="host")),
        ("local:/srv/git", ServerURL("local", path="/srv/git")),
        ("local:/srv/git/../other/", ServerURL("local", path="/srv/other")),
    ],
)
def test_server_url_parses(text: str, expected: ServerURL) -> None:
    assert parse_server_url(text, Path("/root")) == expected


@pytest.mark.parametrize(
    ("url", "text"),
    [
        (ServerURL("ssh", user="git", host="::1", port=22), "ssh://git@[::1]:22"),
        (ServerURL("ssh", host="h"), "ssh://h"),
        (ServerURL("local", path="/srv/x"), "local:/srv/x"),
    ],
)
def test_server_url_prints_back(url: ServerURL, text: str) -> None:
    assert str(url) == text
    assert parse_server_url(text, Path("/")) == url


@pytest.mark.parametrize(
    "text",
    [
        "ssh://",
        "ssh://git@",
        "ssh://host:0",
        "ssh://host:ssh",
        "ssh://bad user@host",
        "ssh://[not-ipv6]",
        "ssh://host/path",
        "ssh://-host",
        "git@host:repo",
        "local:",
        "http://host",
    ],
)
def test_server_url_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_server_url(text, Path("/"))


def test_huge_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path, {"cluster.d/big.yaml": "# " + "x" * MAX_FILE_BYTES + "\n"})
    with pytest.raises(ConfigErrors) as caught:
        load(tmp_path)
    assert any(
        "more than the limit" in e.message
        and e.location is not None
        and e.location.file.endswith("big.yaml")
        for e in caught.value.errors
    )


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 12):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    write(tmp_path, {"cluster.d/bomb.yaml": "\n".join(lines) + "\n"})
    with pytest.raises(ConfigErrors) as caught:
        load(tmp_path)
    assert any("aliases" in e.message for e in caught.value.errors)


def test_missing_directory_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as caught:
        load(tmp_path)
    assert len(caught.value.errors) == 1
    assert "no cluster.d/ directory" in caught.value.errors[0].message


@pytest.mark.parametrize("cluster_section", ["", "cluster:\n", "cluster: {}\n"])
def test_cluster_section_is_optional(tmp_path: Path, cluster_section: str) -> None:
    root = tmp_path / "gitosis-admin"
    write(
        root, {"cluster.d/10.yaml": cluster_section + 'servers:\n  one: {url: "local:/srv/one"}\n'}
    )
    desired = load(root)
    assert desired.cluster.name == "gitosis-admin"  # the checkout's directory name
    assert desired.cluster.admin_repository == "gitosis-admin"
    assert desired.cluster.mirror_group == "grp_mirror"
    assert desired.cluster.replication.mode == "sync"
    assert desired.cluster.replication.timeout == 30


def test_cluster_name_defaults_to_a_valid_name(tmp_path: Path) -> None:
    root = tmp_path / "~admin checkout"
    write(root, {"cluster.d/10.yaml": 'servers:\n  one: {url: "local:/srv/one"}\n'})
    assert load(root).cluster.name == "cluster"
