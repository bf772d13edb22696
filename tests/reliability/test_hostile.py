"""R6 (hostile and broken cluster.d/), R7 (host keys) and R8 (gitosis-serve) against
real sshd servers whose homes are compared before and after.

These run in the two-server default (sync) only: none of them reaches the point
where the replication mode matters. R6's inputs are refused while cluster.d/ is
validated, before any server is contacted (the mode itself is one of the fields
tried); R7's host keys are refused when the operator's connection is made, before
anything is gathered; R8's commands are refused by gitosis-serve before git, and so
any hook, runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.testing.cluster import SshCluster
from reconciler.testing.recipe import Operator, make_operator, user_git

from .scenario import groups, snapshot, snapshot_diff, started_cluster

pytestmark = pytest.mark.e2e

TRACEBACK = "Traceback"
COMMAND_TIMEOUT = 60


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SshCluster, Operator]]:
    from reconciler.testing.cluster import unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with started_cluster(2, ["alpha", "beta"]) as made:
        for server in made.servers:
            server.gitosis_init(made.admin.public_key)
        operator = make_operator(made, tmp_path_factory.mktemp("hostile"), clone_from=made[0])
        yield made, operator


def homes(cluster: SshCluster) -> dict[str, Any]:
    return {server.name: snapshot(server.home) for server in cluster.servers}


def homes_diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return [
        f"{name}: {line}" for name in before for line in snapshot_diff(before[name], after[name])
    ]


# --- R6 ---------------------------------------------------------------------------


def base_document(cluster: SshCluster) -> dict[str, Any]:
    alice = cluster.new_identity("alice@desk")
    return {
        "cluster": {"name": "test", "replication": {"timeout": 20}},
        "servers": {s.name: {"url": s.url} for s in cluster.servers},
        "repositories": {"product": {}},
        "groups": groups(["product"], ["alice@desk"]),
        "users": {"alice@desk": alice.public_key},
    }


Files = dict[str, bytes | str]
Case = Callable[[dict[str, Any], Path], Files]


def doc(change: Callable[[dict[str, Any]], None]) -> Case:
    """A case that edits the (JSON-as-YAML) base document."""

    def make(base: dict[str, Any], _marker: Path) -> Files:
        data = json.loads(json.dumps(base))
        change(data)
        return {"cluster.d/cluster.yaml": json.dumps(data, indent=2, ensure_ascii=False)}

    return make


def raw(text: str | bytes, name: str = "cluster.d/cluster.yaml") -> Case:
    def make(_base: dict[str, Any], marker: Path) -> Files:
        value = text.replace("MARKER", str(marker)) if isinstance(text, str) else text
        return {name: value}

    return make


def extra(name: str, content: str | bytes) -> Case:
    """The valid base document plus one more file (keydir/, a second cluster.d file)."""

    def make(base: dict[str, Any], marker: Path) -> Files:
        value = content.replace("MARKER", str(marker)) if isinstance(content, str) else content
        return {"cluster.d/cluster.yaml": json.dumps(base, indent=2), name: value}

    return make


def repository(name: str) -> Case:
    def change(data: dict[str, Any]) -> None:
        data["repositories"][name] = {}
        data["groups"]["developers"]["writable"].append(name)

    return doc(change)


def user(name: str) -> Case:
    def change(data: dict[str, Any]) -> None:
        data["users"][name] = data["users"]["alice@desk"]
        data["groups"]["developers"]["members"].append(name)

    return doc(change)


def server_field(field: str, value: Any, server: str = "alpha") -> Case:
    def change(data: dict[str, Any]) -> None:
        data["servers"][server][field] = value

    return doc(change)


def set_path(path: tuple[str, ...], value: Any) -> Case:
    def change(data: dict[str, Any]) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return doc(change)


def rename_server(name: str) -> Case:
    def change(data: dict[str, Any]) -> None:
        data["servers"][name] = data["servers"].pop("beta")

    return doc(change)


def fifo(base: dict[str, Any], _marker: Path) -> Files:
    return {"cluster.d/cluster.yaml": json.dumps(base), "cluster.d/zz-pipe.yaml": "FIFO"}


def device(base: dict[str, Any], _marker: Path) -> Files:
    return {"cluster.d/cluster.yaml": json.dumps(base), "cluster.d/zz-zero.yaml": "->/dev/zero"}


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(9)
)

CASES: dict[str, Case] = {
    "yaml bomb (billion laughs)": raw(BOMB),
    "yaml merge key from an anchor": raw(
        "cluster: &c {name: x}\nservers:\n  alpha: {url: 'ssh://git@127.0.0.1'}\n"
        "repositories: {<<: *c}\n"
    ),
    "huge file (2 MiB)": raw("# " + "x" * (2 << 20) + "\n"),
    "huge single value": raw("cluster: {name: " + "y" * (1100 << 10) + "}\n"),
    "binary garbage": raw(bytes(range(256)) * 64),
    "NUL bytes in YAML": raw(b"cluster:\n  name: a\x00b\n"),
    "latin-1 bytes": raw("cluster: {name: caf\xe9}\n".encode("latin-1")),
    "utf-16 file": raw("cluster: {name: x}\n".encode("utf-16")),
    "python object tag": raw("cluster: !!python/object/apply:os.system ['touch MARKER']\n"),
    "custom tag": raw("cluster: !include /etc/passwd\n"),
    "several documents": raw("cluster: {name: a}\n---\ncluster: {name: b}\n"),
    "deep nesting": raw("a: " + "[" * 200 + "]" * 200 + "\n"),
    "duplicate key in a mapping": raw(
        "cluster: {name: a}\nservers:\n  alpha: {url: 'ssh://git@127.0.0.1'}\n"
        "  alpha: {url: 'ssh://git@127.0.0.2'}\n"
    ),
    "duplicate server across files": extra(
        "cluster.d/zz-more.yaml", "servers:\n  alpha: {url: 'ssh://git@127.0.0.1:1'}\n"
    ),
    "duplicate repository across files": extra(
        "cluster.d/zz-more.yaml", "repositories:\n  product: {}\n"
    ),
    "a named pipe in cluster.d": fifo,
    "a symlink to /dev/zero in cluster.d": device,
    "repository ../x": repository("../x"),
    "repository a/../../b": repository("a/../../b"),
    "repository /etc/passwd": repository("/etc/passwd"),
    "repository .hidden": repository(".ssh"),
    "repository -oProxyCommand": repository("-oProxyCommand=touch MARKER"),
    "repository $(...)": repository("$(touch MARKER)"),
    "repository `...`": repository("`touch MARKER`"),
    "repository ;rm": repository("x;rm -rf ~"),
    "repository newline": repository("a\nb"),
    "repository unicode look-alike": repository("prоduct"),  # noqa: RUF001 - Cyrillic o
    "repository a//b": repository("a//b"),
    "repository with space": repository("a b"),
    "user -oProxyCommand": user("-oProxyCommand=x"),
    "user ../../x": user("../../x"),
    "user $(id)": user("$(touch MARKER)@desk"),
    "user newline": user("eve@desk\nmallory"),
    "user unicode look-alike": user("аlice@desk"),  # noqa: RUF001 - Cyrillic a
    "user key with forced-command options": set_path(
        ("users", "alice@desk"), 'command="touch MARKER" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI'
    ),
    "user key smuggling a second line": doc(
        lambda d: d["users"].__setitem__(
            "alice@desk",
            d["users"]["alice@desk"] + '\ncommand="touch MARKER" ' + d["users"]["alice@desk"],
        )
    ),
    "user key garbage": set_path(("users", "alice@desk"), "ssh-ed25519 not-base64!"),
    "keydir unsafe file name": extra("keydir/-oProxyCommand=x.pub", "ssh-ed25519 AAAA x\n"),
    "keydir private key": extra(
        "keydir/bob@desk.pub",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----\n",
    ),
    "group name injection": set_path(("groups", "x]\n[group evil"), {"members": ["alice@desk"]}),
    "server name ../x": rename_server("../x"),
    "server name -oProxyCommand": rename_server("-oProxyCommand=x"),
    "url ssh://-oProxyCommand": server_field("url", "ssh://-oProxyCommand=touch MARKER/"),
    "url user -oProxyCommand": server_field("url", "ssh://-oProxyCommand=x@127.0.0.1"),
    "url host -oProxyCommand": server_field("url", "ssh://git@-oProxyCommand=x"),
    "url with a space and option": server_field("url", "ssh://git@127.0.0.1:22 -oProxyCommand=x"),
    "url with a newline": server_field("url", "ssh://git@127.0.0.1\n-oProxyCommand=x"),
    "url ext:: transport": server_field("url", "ext::sh -c touch% MARKER"),
    "url file://": server_field("url", "file:///etc"),
    "url port out of range": server_field("url", "ssh://git@127.0.0.1:99999"),
    "url with a path": server_field("url", "ssh://git@127.0.0.1:22/../../etc"),
    "peer_url --upload-pack": server_field("peer_url", "ssh://git@h --upload-pack=touch MARKER"),
    "server repositories ../../etc": server_field("repositories", "../../etc"),
    "server repositories absolute": server_field("repositories", "/tmp"),
    "host_key garbage": server_field("host_key", "ssh-ed25519 AAAA\nevil"),
    "host_key with options": server_field(
        "host_key", 'command="x" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI'
    ),
    "admin repository ../x": set_path(("cluster", "admin_repository"), "../x"),
    "mirror group injection": set_path(("cluster", "mirror_group"), "g]\n[group x"),
    "timeout negative": set_path(("cluster", "replication", "timeout"), -1),
    "timeout huge": set_path(("cluster", "replication", "timeout"), 10**12),
    "timeout as text": set_path(("cluster", "replication", "timeout"), "30"),
    # Quorum mode is chosen by this field alone; nothing but the three modes may pass.
    "replication mode unknown": set_path(("cluster", "replication", "mode"), "majority"),
    "replication mode as a list": set_path(("cluster", "replication", "mode"), ["quorum"]),
    "unknown top-level key": set_path(("hooks",), {"post-receive": "touch MARKER"}),
    "description with newline": set_path(("repositories", "product"), {"description": "a\nb"}),
}


def write_case(checkout: Path, files: Files) -> None:
    for directory in ("cluster.d", "keydir"):
        for path in (checkout / directory).glob("*"):
            if directory == "cluster.d" or path.name != "admin@operator.pub":
                path.unlink()
    for name, content in files.items():
        path = checkout / name
        path.parent.mkdir(exist_ok=True)
        if content == "FIFO":
            os.mkfifo(path)
        elif isinstance(content, str) and content.startswith("->"):
            path.symlink_to(content[2:])
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def test_r6_hostile_inputs(pair: tuple[SshCluster, Operator], tmp_path: Path, report: Any) -> None:
    """R6: each input is refused with one clear sentence and exit 1; no server touched."""
    made, operator = pair
    base = base_document(made)
    marker = tmp_path / "pwned"
    before = homes(made)
    problems: list[str] = []
    sentences = 0
    for name, case in CASES.items():
        write_case(operator.checkout, case(base, marker))
        try:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "reconciler",
                    "apply",
                    "--yes",
                    "-C",
                    str(operator.checkout),
                ],
                env=operator.env(),
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            problems.append(f"{name}: apply hung for {COMMAND_TIMEOUT}s")
            continue
        # One sentence per problem, each naming the file (with line and column) or
        # starting with "error:"; a case that is wrong in two places may say so twice.
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        clear = [
            line
            for line in lines
            if len(line) <= 400 and (line.startswith(("error: ", str(operator.checkout) + "/")))
        ]
        if done.returncode != 1:
            problems.append(f"{name}: exit {done.returncode}: {done.stdout}{done.stderr}")
        elif TRACEBACK in done.stderr or not lines or clear != lines or len(lines) > 3:
            problems.append(f"{name}: not one clear sentence: {done.stderr[:600]!r}")
        sentences += len(lines)
        if marker.exists():
            problems.append(f"{name}: the marker file was created")
    after = homes(made)
    changed = homes_diff(before, after)
    # The control: the base document itself is accepted (so refusals come from the cases).
    write_case(operator.checkout, {"cluster.d/cluster.yaml": json.dumps(base, indent=2)})
    control = operator.reconcile("plan", "--detailed-exitcode")
    report(
        inputs_tried=len(CASES),
        refused_cleanly=len(CASES) - len(problems),
        sentences=sentences,
        servers_touched=len(changed),
    )
    assert not problems, "\n".join(problems)
    assert not changed, changed
    assert control.returncode == 2, control.stdout + control.stderr


# --- R7 ---------------------------------------------------------------------------


def fingerprint_of(public_key_file: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key_file)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return out.split()[1]


def test_r7_host_keys(pair: tuple[SshCluster, Operator], tmp_path: Path, report: Any) -> None:
    """R7: a pinned host key that changed, a known_hosts key that changed, and an
    unknown unpinned host: refused with the fingerprint shown, nothing done."""
    made, operator = pair
    alpha = made.servers[0]
    key_file = alpha.directory / "ssh_host_ed25519_key"
    saved = tmp_path / "saved-host-key"
    shutil.copy(key_file, saved)
    shutil.copy(key_file.with_suffix(".pub"), saved.with_suffix(".pub"))
    document = base_document(made)
    known_hosts = operator.home / ".ssh/known_hosts"
    original_known = known_hosts.read_text()
    refusals = 0
    try:
        key_file.unlink()
        key_file.with_suffix(".pub").unlink()
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key_file)],
            check=True,
            timeout=30,
        )
        alpha.stop()
        alpha.start()
        new_fingerprint = fingerprint_of(key_file.with_suffix(".pub"))
        scenarios = {}
        pinned = json.loads(json.dumps(document))
        for server in made.servers:
            pinned["servers"][server.name]["host_key"] = server.host_key  # the old keys
        scenarios["pinned key changed"] = (
            pinned,
            original_known,
            "does not match the host_key pinned",
        )
        scenarios["known_hosts key changed"] = (document, original_known, "CHANGED")
        unknown = "".join(
            line + "\n"
            for line in original_known.splitlines()
            if not line.startswith(f"[127.0.0.1]:{alpha.port} ")
        )
        scenarios["unknown host, not pinned"] = (document, unknown, "not known")
        for name, (data, known, expected) in scenarios.items():
            write_case(operator.checkout, {"cluster.d/cluster.yaml": json.dumps(data, indent=2)})
            known_hosts.write_text(known)
            before = homes(made)
            for args in (("plan",), ("apply", "--yes"), ("status",)):
                done = operator.reconcile(*args)
                said = done.stdout + done.stderr
                assert done.returncode == 1, (name, args, said)
                assert expected in said and new_fingerprint in said, (name, args, said)
                assert "alpha" in said and TRACEBACK not in said
                refusals += 1
            changed = homes_diff(before, homes(made))
            assert not changed, (name, changed)
            assert known_hosts.read_text() == known, f"{name}: known_hosts was changed"
    finally:
        shutil.copy(saved, key_file)
        shutil.copy(saved.with_suffix(".pub"), key_file.with_suffix(".pub"))
        alpha.stop()
        alpha.start()
        known_hosts.write_text(original_known)
    report(scenarios=3, commands_refused=refusals, servers_touched=0)


# --- R8 ---------------------------------------------------------------------------

SERVE_MESSAGES = (
    "Need SSH_ORIGINAL_COMMAND in environment.",
    "Unknown command denied",
    "Arguments to command look dangerous",
    "Repository read access denied",
    "Repository write access denied",
    "Command may not contain newline",
)

UNSAFE_COMMANDS = [
    "",
    "sh",
    "bash -c id",
    "id",
    "env",
    "scp -t /tmp",
    "rsync --server . /tmp",
    "git-shell -c id",
    "git-upload-pack",
    "git-upload-pack ''",
    "git-upload-pack x",
    'git-upload-pack "team/app"',
    "git-upload-pack '../x'",
    "git-upload-pack 'team/../../etc'",
    "git-upload-pack '.ssh'",
    "git-upload-pack 'repositories/../.ssh/authorized_keys'",
    "git-upload-pack '/etc/passwd'",
    "git-upload-pack '~root'",
    "git-upload-pack 'team/app'; id",
    "git-upload-pack 'team/app' && touch /tmp/x",
    "git-upload-pack 'team/app' 'other'",
    "git-upload-pack '$(touch x)'",
    "git-upload-pack '`touch x`'",
    "git-upload-pack '-oProxyCommand=touch x'",
    "git-upload-pack '--upload-pack=touch x'",
    "git-upload-pack 'team/app\nid'",
    "git-upload-pack ' team/app'",
    "git-upload-pack 'team//app'",
    "git-upload-pack 'tеam/app'",  # noqa: RUF001 - Cyrillic e
    "git-upload-pack '" + "a" * 5000 + "'",
    "git-receive-pack '../../.ssh'",
    "git-receive-pack 'evil/.hidden'",
    "git-receive-pack '-x'",
    "git-upload-archive '..'",
    "git-upload-archive '--remote=x'",
    "git upload-pack",
    "git upload-pack '../x'",
    "git config core.sshCommand x",
    "git-upload-pack\t'team/app'x",
]

# (who, verb, repository): each must be denied with the given message.
OUTSIDE_GROUPS = [
    ("alice@desk", "git-receive-pack", "other", "Repository read access denied"),
    ("alice@desk", "git-upload-pack", "other", "Repository read access denied"),
    ("alice@desk", "git-receive-pack", "public", "Repository write access denied"),
    ("alice@desk", "git-receive-pack", "gitosis-admin", "Repository read access denied"),
    ("alice@desk", "git-upload-pack", "gitosis-admin", "Repository read access denied"),
    ("alice@desk", "git-receive-pack", "brand-new", "Repository read access denied"),
    ("alice@desk", "git-upload-archive", "other", "Repository read access denied"),
    ("bob@desk", "git-upload-pack", "team/app", "Repository read access denied"),
    ("bob@desk", "git-receive-pack", "team/app", "Repository read access denied"),
    ("bob@desk", "git-receive-pack", "public", "Repository read access denied"),
    ("bob@desk", "git upload-pack", "team/app.git", "Repository read access denied"),
]


def test_r8_gitosis_serve_denies(
    pair: tuple[SshCluster, Operator], tmp_path: Path, report: Any
) -> None:
    """R8: a corpus of unsafe SSH_ORIGINAL_COMMANDs and access outside a user's groups,
    over real ssh through gitosis-serve: denied with gitosis's messages, nothing made."""
    made, _operator = pair
    alpha = made.servers[0]
    alice = made.new_identity("alice@desk")
    bob = made.new_identity("bob@desk")
    # The admin pushes a gitosis.conf with groups (as a gitosis user would).
    admin_env = made.git_env(made.admin)
    work = tmp_path / "admin"
    subprocess.run(
        ["git", "clone", "--quiet", f"{alpha.url}/gitosis-admin.git", str(work)],
        env=admin_env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (work / "gitosis.conf").write_text(
        "[gitosis]\n\n[group gitosis-admin]\nmembers = admin@operator\n"
        "writable = gitosis-admin\n\n[group team]\nmembers = alice@desk\n"
        "writable = team/app\nreadonly = public\n\n[group others]\nmembers = bob@desk\n"
        "writable = other\n"
    )
    (work / "keydir/alice@desk.pub").write_text(alice.public_key + "\n")
    (work / "keydir/bob@desk.pub").write_text(bob.public_key + "\n")
    user_git(made, made.admin, work, "add", "-A")
    user_git(made, made.admin, work, "commit", "--quiet", "-m", "groups")
    user_git(made, made.admin, work, "push", "--quiet", "origin", "HEAD:master")
    for repository in ("team/app", "public", "other"):
        alpha.run(["git", "init", "--bare", "--quiet", f"repositories/{repository}.git"])

    before = snapshot(alpha.home)
    problems: list[str] = []
    tried = 0

    def ssh_as(who: Any, command: str) -> subprocess.CompletedProcess[str]:
        argv = [*made.ssh_command(who), "-p", str(alpha.port), f"{alpha.user}@127.0.0.1"]
        if command:
            argv.append(command)
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL
        )

    for command in UNSAFE_COMMANDS:
        tried += 1
        done = ssh_as(alice, command)
        said = [m for m in SERVE_MESSAGES if m in done.stderr]
        if done.returncode == 0 or not said or TRACEBACK in done.stderr:
            problems.append(f"{command!r}: exit {done.returncode}: {done.stderr.strip()!r}")
    for name, verb, repository, message in OUTSIDE_GROUPS:
        tried += 1
        who = alice if name == "alice@desk" else bob
        done = ssh_as(who, f"{verb} '{repository}'")
        if done.returncode == 0 or message not in done.stderr:
            problems.append(f"{name} {verb} {repository}: {done.stderr.strip()!r}")
    # Real git too: a push to a read-only repository and a clone outside the groups.
    clone = subprocess.run(
        ["git", "clone", "--quiet", f"{alpha.url}/other.git", str(tmp_path / "c")],
        env=made.git_env(alice),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    tried += 1
    if clone.returncode == 0 or "Repository read access denied" not in clone.stderr:
        problems.append(f"clone of other by alice: {clone.stderr!r}")
    changed = snapshot_diff(before, snapshot(alpha.home))
    report(commands_tried=tried, denied=tried - len(problems), created_on_disk=len(changed))
    assert not problems, "\n".join(problems)
    assert not changed, changed
