"""``gitosis-serve USER``: the forced command of every key in authorized_keys.

It reads the command git's ssh sent (``SSH_ORIGINAL_COMMAND``), decides whether
USER may run it on that repository (``decide``, a pure function of the
configuration and the command), creates the repository if it does not exist yet
(for any command that was allowed, reads included, as gitosis does), and then
replaces itself with
``git shell -c "VERB 'PATH'"``, with ``GITOSIS_USER=USER`` in the environment so
the repository's hooks know who pushed.
"""

from __future__ import annotations

import argparse
import configparser
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.gitosis import app
from reconciler.gitosis.config import have_access
from reconciler.gitosis.names import SAFE_ARG_RE
from reconciler.gitosis.repositories import init_bare, refresh_generated_files

log = logging.getLogger("gitosis.serve")
main_log = logging.getLogger("gitosis.serve.main")

READ_VERBS = ("git-upload-pack", "git-upload-archive")
WRITE_VERBS = ("git-receive-pack",)


class ServingError(app.GitosisError):
    """Serving error"""

    def __init__(self) -> None:
        super().__init__(self.__doc__)


class CommandMayNotContainNewlineError(ServingError):
    """Command may not contain newline"""


class UnknownCommandError(ServingError):
    """Unknown command denied"""


class UnsafeArgumentsError(ServingError):
    """Arguments to command look dangerous"""


class AccessDeniedError(ServingError):
    """Access denied to repository"""


class WriteAccessDeniedError(AccessDeniedError):
    """Repository write access denied"""


class ReadAccessDeniedError(AccessDeniedError):
    """Repository read access denied"""


@dataclass(frozen=True)
class Decision:
    """What gitosis-serve runs: ``verb`` on ``relpath.git`` under ``base``."""

    verb: str  # always the "git-VERB" form
    base: str  # the repository base, relative to ~ unless absolute
    relpath: str  # without ".git"
    mode: str  # "writable" or "readonly": the access that was granted

    @property
    def write(self) -> bool:
        return self.verb in WRITE_VERBS

    @property
    def path(self) -> str:
        """The repository's path as git shell gets it (relative to ~ unless absolute)."""
        return os.path.join(self.base, f"{self.relpath}.git")

    @property
    def command(self) -> str:
        return f"{self.verb} '{self.path}'"


def _split(command: str) -> tuple[str, str]:
    # All known commands take exactly one argument.
    parts = command.split(None, 1)
    if len(parts) != 2:
        raise UnknownCommandError()
    return parts[0], parts[1]


def decide(config: configparser.RawConfigParser, user: str, command: str) -> Decision:
    """Whether ``user`` may run ``command``; raises a ServingError saying why not."""
    if "\n" in command:
        raise CommandMayNotContainNewlineError()
    verb, argument = _split(command)
    if verb == "git":
        subverb, argument = _split(argument)
        verb = f"git-{subverb}"
    if verb not in READ_VERBS and verb not in WRITE_VERBS:
        raise UnknownCommandError()
    match = SAFE_ARG_RE.fullmatch(argument)
    if match is None:
        raise UnsafeArgumentsError()
    path = match.group("path")

    # Write access is always sufficient; "writeable" is a tolerated misspelling.
    mode = "writable"
    granted = have_access(config, user, "writable", path)
    if granted is None:
        granted = have_access(config, user, "writeable", path)
        if granted is not None:
            log.warning('Repository "%s" config has typo: "writeable", should be "writable"', path)
    if granted is None:
        mode = "readonly"
        granted = have_access(config, user, "readonly", path)
        if granted is None:
            raise ReadAccessDeniedError()
        if verb in WRITE_VERBS:
            raise WriteAccessDeniedError()
    base, relpath = granted
    return Decision(verb=verb, base=base, relpath=relpath, mode=mode)


def create_if_missing(config: configparser.RawConfigParser, decision: Decision) -> bool:
    """Create the repository of an allowed command if it does not exist yet.

    gitosis checks only that the repository is missing, whatever the verb: a
    fetch by a user with read access (write access included) creates it too.
    Parent directories get mode 0750, like the repository itself.
    """
    if os.path.exists(decision.path):
        return False
    parent = decision.base
    for segment in f"{decision.relpath}.git".split("/")[:-1]:
        parent = os.path.join(parent, segment)
        os.makedirs(parent, mode=0o750, exist_ok=True)
    try:
        init_bare(decision.path)
    except subprocess.CalledProcessError as e:
        raise app.GitosisError(f"Cannot create repository {decision.path}: {e}") from e
    refresh_generated_files(config)
    return True


def _handle(config: configparser.RawConfigParser, args: argparse.Namespace) -> int:
    os.umask(0o022)
    command = os.environ.get("SSH_ORIGINAL_COMMAND")
    if command is None:
        main_log.error("Need SSH_ORIGINAL_COMMAND in environment.")
        return 1
    main_log.debug("Got command %r", command)
    os.chdir(os.path.expanduser("~"))
    decision = decide(config, args.user, command)
    create_if_missing(config, decision)
    main_log.debug("Serving %s", decision.command)
    os.environ["GITOSIS_USER"] = args.user
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp("git", ["git", "shell", "-c", decision.command])  # noqa: S606
    except OSError as e:
        main_log.error("Cannot execute git-shell: %s", e)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = app.make_parser("gitosis-serve", "Allow restricted git operations under DIR")
    parser.add_argument("user", metavar="USER")
    return app.run(parser, argv, _handle, logger="gitosis.serve.main")


if __name__ == "__main__":
    sys.exit(main())
