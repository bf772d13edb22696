"""gitosis-serve's decision: which commands run, on which path, and why others are refused."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.gitosis.config import parse_config
from reconciler.gitosis.serve import (
    CommandMayNotContainNewlineError,
    ReadAccessDeniedError,
    ServingError,
    UnknownCommandError,
    UnsafeArgumentsError,
    WriteAccessDeniedError,
    decide,
)

CONF = """\
[gitosis]

[group gitosis-admin]
members = admin@desk
writable = gitosis-admin

[group devs]
members = alice@desk
writable = product tools/build deep/a/b
readonly = docs

[group readers]
members = bob@lap
readonly = product

[group typo]
members = erin
writeable = legacy

[group public]
members = @all
readonly = open

[group mapped]
members = frank
map writable visible = actual/place
repositories = /srv/elsewhere

[repo product]
description = The product
owner = alice
gitweb = yes
daemon = yes
"""

UP = "git-upload-pack"
RP = "git-receive-pack"
ARCH = "git-upload-archive"
ADMIN = "repositories/gitosis-admin.git"


def ok(verb: str, path: str) -> str:
    return f"{verb} '{path}'"


NEWLINE = CommandMayNotContainNewlineError
UNKNOWN = UnknownCommandError
UNSAFE = UnsafeArgumentsError
READ_DENIED = ReadAccessDeniedError
WRITE_DENIED = WriteAccessDeniedError

TABLE: list[tuple[str, str, str | type[ServingError]]] = [
    # every verb form, quoted path, with and without .git and leading slashes
    ("alice@desk", "git-upload-pack 'product.git'", ok(UP, "repositories/product.git")),
    ("alice@desk", "git-upload-pack 'product'", ok(UP, "repositories/product.git")),
    ("alice@desk", "git-upload-pack '/product.git'", ok(UP, "repositories/product.git")),
    ("alice@desk", "git-upload-pack '///product.git'", ok(UP, "repositories/product.git")),
    ("alice@desk", "git upload-pack 'product.git'", ok(UP, "repositories/product.git")),
    ("alice@desk", "git-receive-pack 'product.git'", ok(RP, "repositories/product.git")),
    ("alice@desk", "git receive-pack '/product'", ok(RP, "repositories/product.git")),
    ("alice@desk", "git-upload-archive 'product.git'", ok(ARCH, "repositories/product.git")),
    ("alice@desk", "git upload-archive 'product'", ok(ARCH, "repositories/product.git")),
    ("alice@desk", "git-upload-pack\t'product.git'", ok(UP, "repositories/product.git")),
    ("alice@desk", "git-upload-pack   'product.git'", ok(UP, "repositories/product.git")),
    # nested paths
    ("alice@desk", "git-receive-pack 'tools/build.git'", ok(RP, "repositories/tools/build.git")),
    ("alice@desk", "git-receive-pack '/deep/a/b'", ok(RP, "repositories/deep/a/b.git")),
    ("alice@desk", "git-upload-pack 'tools/build/'", UNSAFE),
    ("alice@desk", "git-upload-pack 'tools//build'", UNSAFE),
    # only one .git suffix is stripped; names match exactly
    ("alice@desk", "git-upload-pack 'product.git.git'", READ_DENIED),
    ("alice@desk", "git-upload-pack 'Product.git'", READ_DENIED),
    # unquoted and wrongly quoted arguments
    ("alice@desk", "git-upload-pack product.git", UNSAFE),
    ("alice@desk", 'git-upload-pack "product.git"', UNSAFE),
    ("alice@desk", "git-upload-pack 'product.git", UNSAFE),
    ("alice@desk", "git-upload-pack ''", UNSAFE),
    ("alice@desk", "git-upload-pack 'product.git' ", UNSAFE),
    ("alice@desk", "git-upload-pack 'product.git' extra", UNSAFE),
    # .. and hidden segments, leading dashes
    ("alice@desk", "git-upload-pack '../product.git'", UNSAFE),
    ("alice@desk", "git-upload-pack 'tools/../product.git'", UNSAFE),
    ("alice@desk", "git-receive-pack '/../../etc/passwd'", UNSAFE),
    ("alice@desk", "git-upload-pack '.hidden.git'", UNSAFE),
    ("alice@desk", "git-upload-pack 'tools/.git'", UNSAFE),
    ("alice@desk", "git-upload-pack '-product'", UNSAFE),
    ("alice@desk", "git-upload-pack '~alice/product'", UNSAFE),
    # spaces, shell metacharacters, non-ASCII
    ("alice@desk", "git-upload-pack 'my product.git'", UNSAFE),
    ("alice@desk", "git-upload-pack 'product.git; rm -rf ~'", UNSAFE),
    ("alice@desk", "git-upload-pack 'product.git' && id", UNSAFE),
    ("alice@desk", "git-upload-pack '$(id)'", UNSAFE),
    ("alice@desk", "git-upload-pack '`id`.git'", UNSAFE),
    ("alice@desk", "git-upload-pack 'product|id'", UNSAFE),
    ("alice@desk", "git-upload-pack 'product'\\''x'", UNSAFE),
    ("alice@desk", "git-upload-pack 'pr\u00f8duct'", UNSAFE),
    # newlines anywhere
    ("alice@desk", "git-upload-pack 'product.git'\n", NEWLINE),
    ("alice@desk", "git-upload-pack 'prod\nuct.git'", NEWLINE),
    ("alice@desk", "git-upload-pack 'product.git'\nid", NEWLINE),
    # unknown commands
    ("alice@desk", "", UNKNOWN),
    ("alice@desk", "git", UNKNOWN),
    ("alice@desk", "git upload-pack", UNKNOWN),
    ("alice@desk", "git-upload-pack", UNKNOWN),
    ("alice@desk", "ls 'product.git'", UNKNOWN),
    ("alice@desk", "git-shell -c 'product.git'", UNKNOWN),
    ("alice@desk", "GIT-UPLOAD-PACK 'product.git'", UNKNOWN),
    ("alice@desk", "git fetch 'product.git'", UNKNOWN),
    ("alice@desk", "sh -c 'git-upload-pack product'", UNKNOWN),
    ("alice@desk", "/usr/bin/git-upload-pack 'product.git'", UNKNOWN),
    # read-only access
    ("alice@desk", "git-upload-pack 'docs.git'", ok(UP, "repositories/docs.git")),
    ("alice@desk", "git-receive-pack 'docs.git'", WRITE_DENIED),
    ("bob@lap", "git-upload-pack 'product.git'", ok(UP, "repositories/product.git")),
    ("bob@lap", "git upload-archive 'product'", ok(ARCH, "repositories/product.git")),
    ("bob@lap", "git-receive-pack 'product.git'", WRITE_DENIED),
    ("bob@lap", "git receive-pack 'product'", WRITE_DENIED),
    # no access at all: read denied, also for pushes
    ("eve@x", "git-upload-pack 'product.git'", READ_DENIED),
    ("eve@x", "git-receive-pack 'product.git'", READ_DENIED),
    ("alice@desk", "git-receive-pack 'unlisted.git'", READ_DENIED),
    ("alice@desk", "git-upload-pack 'gitosis-admin.git'", READ_DENIED),
    ("bob@lap", "git-upload-pack 'docs.git'", READ_DENIED),
    # @all, the writeable misspelling, map and a group's own repository base
    ("eve@x", "git-upload-pack 'open.git'", ok(UP, "repositories/open.git")),
    ("eve@x", "git-receive-pack 'open.git'", WRITE_DENIED),
    ("erin", "git-receive-pack 'legacy.git'", ok(RP, "repositories/legacy.git")),
    ("frank", "git-receive-pack 'visible.git'", ok(RP, "/srv/elsewhere/actual/place.git")),
    ("frank", "git-upload-pack 'actual/place.git'", READ_DENIED),
    ("admin@desk", "git-receive-pack 'gitosis-admin.git'", ok(RP, ADMIN)),
    ("admin@desk", "git-upload-pack '/gitosis-admin.git'", ok(UP, ADMIN)),
]


@pytest.fixture(scope="module")
def config() -> configparser.RawConfigParser:
    return parse_config(CONF)


def test_table_is_big_enough() -> None:
    assert len(TABLE) >= 40


@pytest.mark.parametrize(("user", "command", "expected"), TABLE)
def test_decide(
    config: configparser.RawConfigParser,
    user: str,
    command: str,
    expected: str | type[ServingError],
) -> None:
    if isinstance(expected, str):
        assert decide(config, user, command).command == expected
    else:
        with pytest.raises(ServingError) as raised:
            decide(config, user, command)
        assert type(raised.value) is expected


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (CommandMayNotContainNewlineError, "Command may not contain newline"),
        (UnknownCommandError, "Unknown command denied"),
        (UnsafeArgumentsError, "Arguments to command look dangerous"),
        (ReadAccessDeniedError, "Repository read access denied"),
        (WriteAccessDeniedError, "Repository write access denied"),
    ],
)
def test_messages(error: type[ServingError], message: str) -> None:
    assert str(error()) == message


def test_writeable_typo_warns(
    config: configparser.RawConfigParser, caplog: pytest.LogCaptureFixture
) -> None:
    assert decide(config, "erin", "git-receive-pack 'legacy'").mode == "writable"
    assert 'Repository "legacy" config has typo: "writeable", should be "writable"' in caplog.text


# --- the command itself, as a process ---------------------------------------------

SERVE = [sys.executable, "-m", "reconciler.gitosis.serve"]


def serve(home: Path, user: str, command: str | None) -> subprocess.CompletedProcess[str]:
    """Run gitosis-serve; git on the other end says nothing more (a flush packet)."""
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    if command is not None:
        env["SSH_ORIGINAL_COMMAND"] = command
    return subprocess.run(
        [*SERVE, user],
        env=env,
        input="0000",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "repositories").mkdir()
    (tmp_path / "gitosis").mkdir()
    (tmp_path / ".gitosis.conf").write_text(CONF)
    return tmp_path


def test_needs_ssh_original_command(home: Path) -> None:
    proc = serve(home, "alice@desk", None)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == "ERROR:gitosis.serve.main:Need SSH_ORIGINAL_COMMAND in environment.\n"


@pytest.mark.parametrize(
    ("user", "command", "message"),
    [
        ("eve@x", "git-upload-pack 'product.git'", "Repository read access denied"),
        ("bob@lap", "git-receive-pack 'product.git'", "Repository write access denied"),
        ("alice@desk", "git-upload-pack '../x'", "Arguments to command look dangerous"),
        ("alice@desk", "rm -rf /", "Unknown command denied"),
    ],
)
def test_denial_is_logged_and_exits_1(home: Path, user: str, command: str, message: str) -> None:
    proc = serve(home, user, command)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == f"ERROR:gitosis.serve.main:{message}\n"


def test_missing_config(tmp_path: Path) -> None:
    proc = serve(tmp_path, "alice@desk", "git-upload-pack 'product'")
    assert proc.returncode == 1
    assert proc.stderr.startswith("ERROR:gitosis.app:Configuration does not exist: ")


def test_push_creates_repository_with_0750_parents(home: Path) -> None:
    proc = serve(home, "alice@desk", "git-receive-pack 'deep/a/b.git'")
    assert proc.returncode == 0, proc.stderr
    # gitosis warns about [repo product], which does not exist yet
    assert "WARNING:gitosis.gitweb.set_descriptions:Cannot find 'product' in" in proc.stderr
    repo = home / "repositories" / "deep" / "a" / "b.git"
    assert (repo / "HEAD").is_file()
    bare = subprocess.run(
        ["git", "--git-dir", str(repo), "rev-parse", "--is-bare-repository"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert bare.stdout == "true\n"
    for directory in (home / "repositories" / "deep", home / "repositories" / "deep" / "a", repo):
        assert directory.stat().st_mode & 0o777 == 0o750, directory
    # the advertisement of an empty repository went to stdout, nothing else
    assert "capabilities^{}" in proc.stdout


def test_push_refreshes_descriptions_project_list_and_export_flags(home: Path) -> None:
    proc = serve(home, "alice@desk", "git-receive-pack 'product'")
    assert proc.returncode == 0, proc.stderr
    repo = home / "repositories" / "product.git"
    assert (repo / "description").read_text() == "The product\n"
    assert (repo / "git-daemon-export-ok").exists()
    assert (home / "gitosis" / "projects.list").read_text() == "product.git alice\n"


# Whether a missing repository is created: gitosis checks only that it does not
# exist once access was granted, whatever the verb (gitosis/serve.py in 0.3 and
# its Python 3 fork). A read-only user's fetch passes the access check, so it
# creates the repository as well; a user without access creates nothing.
CREATE = "created"
CREATION_TABLE: list[tuple[str, str, str, str]] = [
    # user, command, repository on disk, outcome (CREATE or gitosis's error line)
    ("alice@desk", "git-receive-pack 'product'", "product.git", CREATE),
    ("alice@desk", "git-upload-pack 'product'", "product.git", CREATE),
    ("alice@desk", "git upload-pack '/product.git'", "product.git", CREATE),
    ("alice@desk", "git-upload-archive 'tools/build'", "tools/build.git", CREATE),
    ("alice@desk", "git-upload-pack 'docs'", "docs.git", CREATE),
    ("bob@lap", "git-upload-pack 'product.git'", "product.git", CREATE),
    ("bob@lap", "git upload-archive 'product'", "product.git", CREATE),
    ("eve@x", "git-upload-pack 'open'", "open.git", CREATE),
    ("bob@lap", "git-receive-pack 'product'", "product.git", "Repository write access denied"),
    ("eve@x", "git-upload-pack 'product'", "product.git", "Repository read access denied"),
    ("eve@x", "git-receive-pack 'product'", "product.git", "Repository read access denied"),
    ("eve@x", "git upload-archive 'product'", "product.git", "Repository read access denied"),
    ("alice@desk", "git-upload-pack 'unlisted'", "unlisted.git", "Repository read access denied"),
    ("bob@lap", "git-upload-pack 'docs'", "docs.git", "Repository read access denied"),
]


@pytest.mark.parametrize(("user", "command", "repository", "outcome"), CREATION_TABLE)
def test_missing_repository_creation(
    home: Path, user: str, command: str, repository: str, outcome: str
) -> None:
    proc = serve(home, user, command)
    repo = home / "repositories" / repository
    if outcome != CREATE:
        assert (proc.returncode, proc.stdout) == (1, "")
        assert proc.stderr == f"ERROR:gitosis.serve.main:{outcome}\n"
        assert list((home / "repositories").iterdir()) == []
        assert list((home / "gitosis").iterdir()) == []
        return
    assert "ERROR:" not in proc.stderr, proc.stderr
    bare = subprocess.run(
        ["git", "--git-dir", str(repo), "rev-parse", "--is-bare-repository"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert bare.stdout == "true\n"
    assert repo.stat().st_mode & 0o777 == 0o750
    # ... and descriptions, projects.list and export flags were refreshed after it.
    listed = "product.git alice\n" if repository == "product.git" else "product alice\n"
    assert (home / "gitosis" / "projects.list").read_text() == listed
    if repository == "product.git":
        assert (repo / "description").read_text() == "The product\n"
        assert (repo / "git-daemon-export-ok").exists()


def test_existing_repository_is_not_touched(home: Path) -> None:
    repo = home / "repositories" / "product.git"
    subprocess.run(["git", "init", "--bare", "--quiet", str(repo)], check=True)
    (repo / "description").write_text("by hand\n")
    proc = serve(home, "bob@lap", "git-upload-pack 'product'")
    assert proc.returncode == 0, proc.stderr
    assert (repo / "description").read_text() == "by hand\n"
    assert not (home / "gitosis" / "projects.list").exists()


@pytest.mark.parametrize(
    ("loglevel", "expected"),
    [
        ("DEBUG", "DEBUG:gitosis.serve.main:Got command 'rm -rf /'\n"),
        ("LOUD", "WARNING:gitosis.app:Ignored invalid loglevel configuration: 'LOUD'\n"),
        ("CRITICAL", ""),
    ],
)
def test_loglevel(home: Path, loglevel: str, expected: str) -> None:
    conf = home / ".gitosis.conf"
    conf.write_text(conf.read_text().replace("[gitosis]\n", f"[gitosis]\nloglevel = {loglevel}\n"))
    proc = serve(home, "alice@desk", "rm -rf /")
    assert proc.returncode == 1
    error = "ERROR:gitosis.serve.main:Unknown command denied\n"
    assert proc.stderr == expected + (error if loglevel != "CRITICAL" else "")


def test_config_option(home: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.conf"
    other.write_text("[group x]\nmembers = eve@x\nreadonly = product\n")
    env = {
        "HOME": str(home),
        "PATH": os.environ["PATH"],
        "SSH_ORIGINAL_COMMAND": "git-receive-pack 'product'",
    }
    proc = subprocess.run(
        [*SERVE, "--config", str(other), "eve@x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.stderr == "ERROR:gitosis.serve.main:Repository write access denied\n"
