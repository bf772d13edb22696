"""Adopting a hand-made cluster (issue 13 item 3), facts in, actions out: the servers'
own keys that keydir/ already names are reused, and the recipe's remotes to the peers
(``mirror-server``, ``origin`` from ``git clone --mirror``) are taken over."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.admin_checkout import CheckoutFacts, server_keys
from reconciler.desired import load
from reconciler.facts import Facts, parse_server_facts
from reconciler.planning import PlanContext, PlanOptions, make_plan
from reconciler.planning.model import Plan
from reconciler.refs import RefReport
from reconciler.server.ops import RemoveRemote, SetRemote
from tests.planning.test_planner import CLUSTER, HEAD, HOST_A, HOST_B, base_facts, plan_lines

# Made with ssh-keygen; the fingerprints are what `ssh-keygen -l` printed for them.
RSA_A = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC1g0c7m39DwOn5vYSGL1deM5jf7PDAHEmrN1G1QMGPpBHrPs65faz"
    "kHPtwU8iAzP0eAJjV0Oaq9Y7PIZwjUPvTV2AYIvepmV5ckgM+Wax9b+4XWKUSMjTdkwXjWj8Ctcoe/Q0usm6WXJAz3c"
    "hnX0ZUNiOrwu20/SngVcB9rK3nTw== git@a"
)
RSA_A_FINGERPRINT = "ssh-rsa SHA256:qdIut9nN8QEID03k3qQNAn/240GUPkrfA/PdinlYTDI"
RSA_OTHER = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCYc2fvR0Grj0P4x9DnaN9eCKZh+HYK6S6vWBykPqUNAZnCTy8RiQz"
    "r39ibI+1pNAyviATEJ2HucStDoCF6Hj+F3a6kVHvtJUDMaozIHHuGGevWpW7+EhIybc9dRMg3Oxf7Me+uYLWudS7DiT"
    "01oA36RlPGnGhc6PWmLLUxFGfxHw== git@other"
)
RSA_OTHER_FINGERPRINT = "ssh-rsa SHA256:3jdwZV7PDjApX8NH+gd05g7zXTxBsHZp8fFRa4I3QfY"
KEY_A_FINGERPRINT = "ssh-ed25519 SHA256:AaNymPy0seFiT3CACVdo6qjhcqOj6EaapqPKq6Xktiw"


def desired_with_keydir(root: Path, keydir: dict[str, str]) -> Any:
    (root / "cluster.d").mkdir(parents=True)
    (root / "cluster.d" / "cluster.yaml").write_text(CLUSTER)
    (root / "keydir").mkdir()
    for user, key in keydir.items():
        (root / "keydir" / f"{user}.pub").write_text(key + "\n")
    return load(root)


def context(desired: Any, servers: dict[str, dict[str, Any]], **options: Any) -> PlanContext:
    host_keys = {"a": HOST_A, "b": HOST_B}
    facts = Facts(
        servers={n: parse_server_facts(n, d, host_key=host_keys[n]) for n, d in servers.items()}
    )
    relations: Any = {"a": "same", "b": "same"}
    checkout = CheckoutFacts(desired.root, "master", HEAD, files={}, relations=relations)
    return PlanContext(desired, facts, checkout, PlanOptions(**options), RefReport())


def hand_made_keys(data: dict[str, Any], pairs: dict[str, str]) -> None:
    """A server whose git user made its key pairs by hand: no ~/.ssh/id_ed25519."""
    data.update(server_key=None, server_key_private=False)
    data["key_pairs"] = [{"path": path, "public": key} for path, key in pairs.items()]


def key_lines(plan: Plan) -> list[str]:
    return [line for line in plan_lines(plan) if "key" in line]


# --- server keys ---------------------------------------------------------------------


def test_rsa_key_that_keydir_names_is_reused(tmp_path: Path) -> None:
    desired = desired_with_keydir(tmp_path, {"git@a": RSA_A})
    servers = base_facts(desired)
    hand_made_keys(servers["a"], {".ssh/id_rsa": RSA_A})
    ctx = context(desired, servers)
    plan = make_plan(ctx)
    assert key_lines(plan) == [], plan_lines(plan)
    assert not [a for a in plan.actions if a.subject == "server-key"]
    assert [n.message for n in plan.notes if n.subject == "server-key" and n.server == "a"] == [
        "server key ~/.ssh/id_rsa present, named in keydir/git@a.pub"
    ]
    # keydir/git@a.pub names it already: the admin commit leaves that file as it is.
    assert "git@a" not in server_keys(desired, ctx.facts)


def test_the_pair_keydir_names_wins_over_an_id_ed25519_it_does_not(tmp_path: Path) -> None:
    desired = desired_with_keydir(tmp_path, {"git@a": RSA_A})
    servers = base_facts(desired)
    # The pair keydir names wins over an id_ed25519 made later and named nowhere.
    hand_made_keys(servers["a"], {".ssh/id_ed25519": servers["b"]["server_key"]})
    servers["a"]["key_pairs"].append({"path": ".ssh/id_ecdsa", "public": RSA_A})
    servers["a"]["server_key"] = servers["b"]["server_key"]
    plan = make_plan(context(desired, servers))
    notes = [n for n in plan.notes if n.subject == "server-key" and n.server == "a"]
    assert [(n.target, n.level) for n in notes] == [("~/.ssh/id_ecdsa", "info")]


def test_key_pair_that_keydir_does_not_name_is_replaced_and_the_plan_says_so(
    tmp_path: Path,
) -> None:
    desired = desired_with_keydir(tmp_path, {"git@a": RSA_OTHER})
    servers = base_facts(desired)
    hand_made_keys(servers["a"], {".ssh/id_rsa": RSA_A})
    plan = make_plan(context(desired, servers))
    assert key_lines(plan) == [
        "a: + generate the server key ~/.ssh/id_ed25519 (git@a) to replace keydir/git@a.pub "
        f"({RSA_OTHER_FINGERPRINT}), which matches no key pair in the git user's ~/.ssh"
    ]


def test_named_key_outside_the_default_identities_is_replaced_and_the_plan_says_why(
    tmp_path: Path,
) -> None:
    desired = desired_with_keydir(tmp_path, {"git@a": RSA_A})
    servers = base_facts(desired)
    hand_made_keys(servers["a"], {".ssh/git_mirroring": RSA_A})
    plan = make_plan(context(desired, servers))
    assert key_lines(plan) == [
        "a: + generate the server key ~/.ssh/id_ed25519 (git@a) to replace keydir/git@a.pub "
        f"({RSA_A_FINGERPRINT}), which is the key pair ~/.ssh/git_mirroring, which the git "
        "user's ssh does not offer by default (the replication hook could not push with it)"
    ]


def test_existing_ed25519_key_replacing_a_keydir_key_is_a_warning(tmp_path: Path) -> None:
    desired = desired_with_keydir(tmp_path, {"git@a": RSA_OTHER})
    servers = base_facts(desired)
    ctx = context(desired, servers)
    assert key_lines(make_plan(ctx)) == [
        f"a: warning: the admin commit replaces keydir/git@a.pub ({RSA_OTHER_FINGERPRINT}), "
        "which matches no key pair in the git user's ~/.ssh, with ~/.ssh/id_ed25519.pub "
        f"({KEY_A_FINGERPRINT})"
    ]
    assert server_keys(desired, ctx.facts)["git@a"] == servers["a"]["server_key"]


# --- remotes ---------------------------------------------------------------------------


def recipe_remotes(servers: dict[str, dict[str, Any]]) -> None:
    """a has `mirror-server` to b (recipe step 5), b has `origin` to a (clone --mirror)."""
    a, b = servers["a"]["repositories"]["product"], servers["b"]["repositories"]["product"]
    del a["remotes"]["b"], b["remotes"]["a"]
    a["remotes"]["mirror-server"] = {
        "url": "ssh://git@b.example/product.git",
        "fetch": ["+refs/heads/*:refs/remotes/mirror-server/*"],
    }
    b["remotes"]["origin"] = {
        "url": "ssh://git@a.example:2222/product.git",
        "fetch": ["+refs/*:refs/*"],
        "mirror": "true",
    }


@pytest.fixture
def desired(tmp_path: Path) -> Any:
    return desired_with_keydir(tmp_path, {})


def test_recipe_remotes_are_taken_over_with_replace_foreign(desired: Any) -> None:
    servers = base_facts(desired)
    recipe_remotes(servers)
    plan = make_plan(context(desired, servers, replace_foreign=True))
    assert plan_lines(plan) == [
        "a: ~ product: take over remote mirror-server (ssh://git@b.example/product.git) as b "
        "-> ssh://git@b.example/product.git",
        "b: ~ product: take over remote origin (ssh://git@a.example:2222/product.git) as a "
        "-> ssh://git@a.example:2222/product.git",
        "Plan: 0 to create, 2 to change, 0 to remove, 0 conflicts",
    ]
    # Renamed and normalised: the managed remote is written, then the old section goes.
    assert plan.actions[0].ops == (
        SetRemote("repositories/product.git", "b", "ssh://git@b.example/product.git"),
        RemoveRemote("repositories/product.git", "mirror-server"),
    )


def test_recipe_remotes_without_the_flag_say_how_to_take_them_over(desired: Any) -> None:
    servers = base_facts(desired)
    recipe_remotes(servers)
    lines = plan_lines(make_plan(context(desired, servers)))
    assert (
        "a: warning: product: foreign remote mirror-server (ssh://git@b.example/product.git) "
        "points at b; apply with --replace-foreign to take it over as remote b"
    ) in lines
    assert "a: + product: add remote b -> ssh://git@b.example/product.git" in lines


@pytest.mark.parametrize(
    ("url", "peer"),
    [
        ("git@b.example:product.git", "b"),  # scp-like, as people write them
        ("git@b.example:repositories/product", "b"),
        ("ssh://git@B.EXAMPLE:22/~/repositories/product.git/", "b"),
        ("ssh://b.example/product.git", "b"),  # no user: the login's default
        ("ssh://git@b.example/tools.git", None),  # another repository
        ("ssh://git@b.example:2222/product.git", None),  # another port: not b
        ("ssh://alice@b.example/product.git", None),  # another account
        ("ssh://git@a.example:2222/product.git", None),  # the server itself
        ("/srv/backup/product.git", None),
    ],
)
def test_which_urls_point_at_a_peer(desired: Any, url: str, peer: str | None) -> None:
    servers = base_facts(desired)
    remotes = servers["a"]["repositories"]["product"]["remotes"]
    del remotes["b"]
    remotes["hand-made"] = {"url": url}
    plan = make_plan(context(desired, servers, replace_foreign=True))
    taken = [a for a in plan.actions if a.target == "product remote b" and len(a.ops) == 2]
    assert bool(taken) == (peer is not None), plan_lines(plan)
    if peer is None:
        assert any("left alone; to remove it" in line for line in plan_lines(plan))


def test_second_remote_to_a_peer_goes_with_replace_foreign(desired: Any) -> None:
    servers = base_facts(desired)
    servers["a"]["repositories"]["product"]["remotes"]["mirror-server"] = {
        "url": "ssh://git@b.example/product.git"
    }
    assert plan_lines(make_plan(context(desired, servers, replace_foreign=True))) == [
        "a: - product: remove foreign remote mirror-server (ssh://git@b.example/product.git), "
        "a second remote to b beside remote b",
        "Plan: 0 to create, 0 to change, 1 to remove, 0 conflicts",
    ]


def test_a_remote_to_a_local_peer_by_path_or_file_url_is_taken_over(tmp_path: Path) -> None:
    from reconciler.planning.context import settings_text
    from reconciler.testing.subjects import converged_facts
    from tests.planning.test_planner import converged_server

    root = tmp_path / "admin"
    (root / "cluster.d").mkdir(parents=True)
    text = CLUSTER.replace("ssh://git@a.example:2222", "local:/srv/a").replace(
        "ssh://git@b.example", "local:/srv/b"
    )
    (root / "cluster.d" / "cluster.yaml").write_text(text)
    desired = load(root)
    servers = {
        "a": converged_server("a", {"b": "/srv/b/repositories/{repo}.git"}),
        "b": converged_server("b", {"a": "/srv/a/repositories/{repo}.git"}),
    }
    for name, data in servers.items():
        data["settings_text"] = settings_text(desired, name)
        data.update(converged_facts(desired, name))
        data["known_hosts"] = []
    a, b = servers["a"]["repositories"]["product"], servers["b"]["repositories"]["product"]
    del a["remotes"]["b"], b["remotes"]["a"]
    a["remotes"]["mirror-server"] = {"url": "file:///srv/b/repositories/product.git"}
    b["remotes"]["origin"] = {"url": "/srv/a/repositories/product", "mirror": "true"}
    facts = Facts(servers={n: parse_server_facts(n, d) for n, d in servers.items()})
    relations: Any = {"a": "same", "b": "same"}
    checkout = CheckoutFacts(root, "master", HEAD, files={}, relations=relations)
    options = PlanOptions(replace_foreign=True)
    assert plan_lines(make_plan(PlanContext(desired, facts, checkout, options, RefReport()))) == [
        "a: ~ product: take over remote mirror-server (file:///srv/b/repositories/product.git) "
        "as b -> /srv/b/repositories/product.git",
        "b: ~ product: take over remote origin (/srv/a/repositories/product) as a "
        "-> /srv/a/repositories/product.git",
        "Plan: 0 to create, 2 to change, 0 to remove, 0 conflicts",
    ]
