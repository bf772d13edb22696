"""The fact parser on what the gather program answered on real servers.

``tests/data/gather-server*.json`` were recorded by ``tests/data/record_gather.py``
from two real sshd servers after ``reconcile apply`` of the end-to-end scenario and a
push of a branch and a tag to product on server1 (run it again to record them anew).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import ReconcilerError
from reconciler.facts import (
    GitosisFacts,
    HookFacts,
    KeyPair,
    LibraryFacts,
    RemoteFacts,
    parse_server_facts,
)

DATA = Path(__file__).resolve().parent / "data"
RECORDED = sorted(DATA.glob("gather-*.json"))


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"gather-{name}.json").read_text())
    return data


def test_both_servers_were_recorded() -> None:
    assert [p.name for p in RECORDED] == ["gather-server1.json", "gather-server2.json"]


@pytest.mark.parametrize("name", ["server1", "server2"])
def test_a_converged_server_parses_to_the_values_apply_made(name: str) -> None:
    raw = recorded(name)
    facts = parse_server_facts(name, raw, host_key="ssh-ed25519 AAAA")
    peer = "s2" if name == "server1" else "s1"
    assert facts.repositories_dir == f"{facts.home}/repositories" and facts.repositories_exists
    assert set(facts.repositories) == {"gitosis-admin", "product", "tools/build-scripts"}
    stub = facts.repositories["product"].hook
    assert stub is not None and stub.sha256 is not None
    for repository, repo in facts.repositories.items():
        # One stub in every repository, the git user's, mode 0755.
        assert repo.hook == HookFacts(0o755, facts.uid, stub.sha256, managed=True), repository
        assert repo.bare and repo.head == "ref: refs/heads/master"
        expected = (
            {}
            if repository == "gitosis-admin"
            else {peer: RemoteFacts(url=repo.remotes[peer].url, managed=True)}
        )
        assert repo.remotes == expected
    assert str(facts.repositories["product"].remotes[peer].url).endswith("/product.git")
    # The branch and the tag pushed to server1 were replicated to server2.
    assert facts.repositories["product"].ref_count == 2
    assert facts.repositories["tools/build-scripts"].ref_count == 0
    assert facts.key_pairs == (KeyPair(".ssh/id_ed25519", str(facts.server_key)),)
    assert facts.server_key_private and facts.ssh_dir_mode == 0o700
    assert [line.rsplit(" ", 1)[1] for line in facts.known_hosts] == [f"reconciler:{peer}"]
    assert facts.gitosis == GitosisFacts(runtime=None, on_path=True)
    assert facts.library == LibraryFacts(version=raw["library"]["version"], intact=True)
    assert facts.repo_sections["product"].description == "The product\n"
    assert facts.projects_list == ""
    assert facts.admin.exists and facts.admin.branch == "master"
    assert facts.admin.history[-1].committer == "Gitosis Admin"
    assert facts.queue == () and facts.queue_errors == ()
    assert facts.settings is not None and facts.settings["peers"] == [peer]
    assert facts.host_key == "ssh-ed25519 AAAA"


def test_pushes_are_those_of_the_hook() -> None:
    facts = parse_server_facts("server1", recorded("server1"))
    assert set(facts.pushes) == {"s2"} and facts.pushes["s2"].results == {"ok": 1}


@pytest.mark.parametrize("name", ["server1", "server2"])
def test_shared_facts_are_one_definition_both_ways(name: str) -> None:
    """What the server's reader sent is what the operator's class writes again."""
    raw = recorded(name)
    facts = parse_server_facts(name, raw)
    assert facts.library.to_json() == raw["library"]
    assert facts.gitosis.to_json() == raw["gitosis"]
    assert [pair.to_json() for pair in facts.key_pairs] == raw["key_pairs"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda d: d["library"].update(intact="yes"),
            "library.intact must be true or false, not 'yes'",
        ),
        (lambda d: d["gitosis"].update(runtime=7), "gitosis.runtime must be a string, not 7"),
        (lambda d: d["key_pairs"][0].pop("public"), "key_pairs[] lacks field 'public'"),
        (lambda d: d["library"].update(versoin="x"), "library has unknown field 'versoin'"),
    ],
)
def test_a_malformed_answer_is_one_sentence_naming_server_and_field(
    damage: Any, message: str
) -> None:
    raw = recorded("server1")
    damage(raw)
    with pytest.raises(ReconcilerError) as error:
        parse_server_facts("server1", raw)
    assert (
        str(error.value) == f"server server1: the gather program's answer is malformed: {message}"
    )


def test_a_repository_without_optional_keys_parses_as_with_their_defaults_written() -> None:
    """The shortcut for a plain repository and remote (what nearly every one is) gives
    the facts that the same answer with every default spelled out gives."""
    raw = recorded("server1")
    plain = {
        "head": "ref: refs/heads/master",
        "bare": True,
        "remotes": {"peer": {"url": "ssh://git@peer/x.git", "managed": True}},
        "hook": {"mode": 0o755, "uid": 1000, "sha256": "ab", "managed": True},
        "refs_digest": "d",
        "ref_count": 2,
    }
    spelled = {
        **plain,
        "remotes": {
            "peer": {
                "url": "ssh://git@peer/x.git",
                "fetch": [],
                "pushurl": None,
                "mirror": None,
                "managed": True,
            }
        },
        "refs": None,
        "proc_receive_hook": None,
        "transaction_hook": None,
        "proc_receive_refs": [],
        "ref_locks": [],
        "aborted": [],
        "export_ok": False,
    }
    raw["repositories"] = {"x": plain, "y": spelled}
    parsed = parse_server_facts("server1", raw).repositories
    assert parsed["x"] == replace(parsed["y"], name="x")
    assert parsed["x"].remotes["peer"] == RemoteFacts("ssh://git@peer/x.git", managed=True)
