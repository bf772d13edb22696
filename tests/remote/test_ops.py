"""The ops' one definition: JSON both ways, refusals of anything else, and a handler on
the server for every op a server carries out."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler.server import common, execute, ops
from reconciler.server.wire import WireError, parse_shape

# One value of every op kind, and its JSON as execute and saved plans read it (the
# keys of the dict ops before the typed ones: plan files of format 1 stay readable).
EXAMPLES: list[tuple[ops.Op, dict[str, Any]]] = [
    (
        ops.WriteFile("repositories/x.git/description", "x\n"),
        {
            "op": "write_file",
            "path": "repositories/x.git/description",
            "content": "x\n",
            "mode": 0o644,
            "expect_sha256": None,
            "dir_mode": 0o755,
        },
    ),
    (
        ops.RemoveFile("p", expect_sha256="e" * 64),
        {"op": "remove_file", "path": "p", "expect_sha256": "e" * 64},
    ),
    (
        ops.RemoveLeftovers((".ssh/.authorized_keys.reconciler-tmp-7-x",)),
        {"op": "remove_leftovers", "paths": [".ssh/.authorized_keys.reconciler-tmp-7-x"]},
    ),
    (
        ops.EditLines(".ssh/known_hosts", add=("l1",), remove=("l2", "l3")),
        {
            "op": "edit_lines",
            "path": ".ssh/known_hosts",
            "add": ["l1"],
            "remove": ["l2", "l3"],
            "mode": 0o600,
            "dir_mode": 0o700,
        },
    ),
    (ops.Keygen("git@a"), {"op": "keygen", "comment": "git@a"}),
    (
        ops.GitosisInit("ssh-ed25519 K a"),
        {"op": "gitosis_init", "pubkey": "ssh-ed25519 K a", "command": None},
    ),
    (
        ops.AdminUpdate(
            "repositories/gitosis-admin.git", "master", "@HEAD", "@BUNDLE", old=ops.INIT_COMMIT
        ),
        {
            "op": "admin_update",
            "repo": "repositories/gitosis-admin.git",
            "branch": "master",
            "new": "@HEAD",
            "bundle": "@BUNDLE",
            "old": "@INIT",
            "pubkey": None,
            "init_command": None,
        },
    ),
    (
        ops.LocalCommit({"gitosis.conf": "[gitosis]\n"}, remove=("keydir/old.pub",)),
        {
            "op": "local_commit",
            "files": {"gitosis.conf": "[gitosis]\n"},
            "remove": ["keydir/old.pub"],
        },
    ),
    (ops.InitBare("repositories/x.git"), {"op": "init_bare", "path": "repositories/x.git"}),
    (
        ops.CloneMirror("repositories/x.git", "ssh://b/x.git"),
        {
            "op": "clone_mirror",
            "path": "repositories/x.git",
            "url": "ssh://b/x.git",
            "timeout": 3600.0,
        },
    ),
    (
        ops.SetRemote("repositories/x.git", "b", "ssh://b/x.git", replace=True),
        {
            "op": "set_remote",
            "repo": "repositories/x.git",
            "name": "b",
            "url": "ssh://b/x.git",
            "replace": True,
        },
    ),
    (ops.RemoveRemote("r", "old"), {"op": "remove_remote", "repo": "r", "name": "old"}),
    (
        ops.InstallHook("r/hooks/post-receive", "#!/bin/sh\n", "0" * 16, expect_sha256="absent"),
        {
            "op": "install_hook",
            "path": "r/hooks/post-receive",
            "content": "#!/bin/sh\n",
            "library": "0" * 16,
            "expect_sha256": "absent",
        },
    ),
    (
        ops.KeepFile("h", "h.kept"),
        {"op": "keep_file", "path": "h", "to": "h.kept", "expect_sha256": None},
    ),
    (ops.Symlink("l", "post-receive"), {"op": "symlink", "path": "l", "target": "post-receive"}),
    (
        ops.RemoveSymlink("l", "post-receive"),
        {"op": "remove_symlink", "path": "l", "target": "post-receive"},
    ),
    (
        ops.InstallTemplate("d" * 16, {"hooks/proc-receive": {"link": "post-receive"}}, "0" * 16),
        {
            "op": "install_template",
            "digest": "d" * 16,
            "entries": {"hooks/proc-receive": {"link": "post-receive"}},
            "library": "0" * 16,
        },
    ),
    (
        ops.SetTemplateDir("/home/git/.reconciler/templates/" + "d" * 16, None),
        {
            "op": "set_template_dir",
            "value": "/home/git/.reconciler/templates/" + "d" * 16,
            "expect": None,
        },
    ),
    (
        ops.SshConfigBlock(".ssh/config", ("# BEGIN reconciler", "# END reconciler")),
        {
            "op": "ssh_config_block",
            "path": ".ssh/config",
            "block": ["# BEGIN reconciler", "# END reconciler"],
            "mode": 0o600,
            "dir_mode": 0o700,
        },
    ),
    (
        ops.SetConfig("r", "receive.procReceiveRefs", ("refs/heads/", "refs/tags/")),
        {
            "op": "set_config",
            "repo": "r",
            "key": "receive.procReceiveRefs",
            "values": ["refs/heads/", "refs/tags/"],
        },
    ),
    (
        ops.PushRefs("r", "b", (("refs/heads/main", "a" * 40, ""),)),
        {
            "op": "push_refs",
            "repo": "r",
            "peer": "b",
            "updates": [["refs/heads/main", "a" * 40, ""]],
            "timeout": 600.0,
        },
    ),
    (
        ops.RemoveStaleLock("r", "refs/heads/main", 105.0),
        {"op": "remove_stale_lock", "repo": "r", "ref": "refs/heads/main", "min_age": 105.0},
    ),
    (
        ops.AdoptMajority("r", "refs/heads/main", new="a" * 40, old="b" * 40, peer="c"),
        {
            "op": "adopt_majority",
            "repo": "r",
            "ref": "refs/heads/main",
            "new": "a" * 40,
            "old": "b" * 40,
            "peer": "c",
            "timeout": 600.0,
        },
    ),
    (
        ops.DrainQueue("repositories", ("1.json",), ".reconciler/queue"),
        {
            "op": "drain_queue",
            "base": "repositories",
            "files": ["1.json"],
            "queue": ".reconciler/queue",
        },
    ),
    (
        ops.InstallLibrary("0" * 16, {"reconciler/__init__.py": ""}),
        {
            "op": "install_library",
            "version": "0" * 16,
            "files": {"reconciler/__init__.py": ""},
            "runtime": False,
        },
    ),
    (ops.CreateGitUser("git"), {"op": "create_git_user", "user": "git"}),
]


def test_every_op_kind_has_an_example() -> None:
    assert sorted(type(op).KIND for op, _json in EXAMPLES) == sorted(ops.KINDS)


@pytest.mark.parametrize(("op", "data"), EXAMPLES, ids=lambda v: getattr(v, "KIND", ""))
def test_json_both_ways(op: ops.Op, data: dict[str, Any]) -> None:
    assert op.to_json() == data
    # Through text, as it travels: lists come back as the tuples they were.
    back = ops.decode(json.loads(json.dumps(op.to_json())))
    assert back == op and type(back) is type(op)
    # Fields with defaults may be left out (an older plan file, a hand-made op).
    required = [name for name, (_shape, needed) in type(op).shapes().items() if needed]
    short = {"op": op.KIND, **{name: data[name] for name in required}}
    assert ops.decode(short) == type(op)(**{name: getattr(back, name) for name in required})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"op": "init_bare"}, "init_bare lacks field 'path'"),
        ({"op": "init_bare", "path": "p", "paht": "p"}, "init_bare has unknown field 'paht'"),
        ({"op": "init_bare", "path": 7}, "init_bare.path must be a string, not 7"),
        (
            {"op": "set_remote", "repo": "r", "name": "b", "url": "u", "replace": "yes"},
            "must be true or false",
        ),
        (
            {"op": "write_file", "path": "p", "content": "", "mode": True},
            "write_file.mode must be an integer",
        ),
        (
            {"op": "push_refs", "repo": "r", "peer": "b", "updates": [["refs/heads/x", "a"]]},
            "push_refs.updates[0] must be a list of 3",
        ),
        ({"op": "explode"}, "unknown operation 'explode'"),
        ({"path": "p"}, "unknown operation None"),
        (["init_bare"], "an operation must be an object"),
    ],
)
def test_anything_else_is_refused_with_one_sentence(data: Any, message: str) -> None:
    with pytest.raises(WireError) as error:
        ops.decode(data)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_every_field_annotation_is_a_supported_shape() -> None:
    for cls in ops.KINDS.values():
        assert cls.shapes(), cls
    with pytest.raises(ValueError, match="unsupported field annotation"):
        parse_shape("list[str]")


def test_every_op_a_server_carries_out_has_its_handler() -> None:
    assert set(execute.OPS) == set(ops.KINDS.values()) - {ops.LocalCommit}


def run_program(monkeypatch: pytest.MonkeyPatch, home: Path, actions: list[Any]) -> list[Any]:
    monkeypatch.setattr(common, "HOME", str(home))
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"actions": actions})))
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    execute.main()
    return list(json.loads(out.getvalue())["results"])


def test_an_action_with_a_malformed_op_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ops.InitBare("repositories/first.git").to_json()
    results = run_program(
        monkeypatch,
        tmp_path,
        [
            [first, {"op": "init_bare", "paht": "repositories/second.git"}],
            [{"op": "local_commit", "files": {}}],
            [ops.InitBare("repositories/third.git").to_json()],
        ],
    )
    assert results == [
        {"ok": False, "error": "init_bare has unknown field 'paht'"},
        {"ok": False, "error": "operation 'local_commit' is not carried out on a server"},
        {"ok": True, "error": ""},
    ]
    # Decoded whole before any of its ops ran: the first repository was not made.
    assert not (tmp_path / "repositories/first.git").exists()
    assert (tmp_path / "repositories/third.git/HEAD").is_file()


def test_a_lock_holder_leaves_a_live_writers_temporary(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The server lock's holder removes the temporaries of a file it writes, but only
    those whose maker is gone: gitosis's hook, on a user's push to gitosis-admin,
    writes authorized_keys without the lock, and its rename must still find its file."""
    child = subprocess.Popen(["sleep", "60"])
    try:
        ended = subprocess.Popen(["true"])
        ended.wait(timeout=30)
        live = tmp_path / f".authorized_keys{common.TEMPORARY_MARK}{child.pid}-abc"
        dead = tmp_path / f".authorized_keys{common.TEMPORARY_MARK}{ended.pid}-def"
        live.write_text("a live writer's half\n")
        dead.write_text("a killed writer's half\n")
        monkeypatch.setattr(common, "LOCK_FD", 99)  # holding the server lock
        common.atomic_write(tmp_path / "authorized_keys", b"whole\n", 0o600)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["authorized_keys", live.name])
    finally:
        child.kill()
        child.wait(timeout=30)
