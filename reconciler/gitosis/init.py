"""``gitosis-init``: set up the git user's home for gitosis, given the admin's key.

Reads one public key line on stdin; its comment (last field) names the admin and
must be a safe user name. Creates ``~/gitosis``, ``~/repositories`` and
``repositories/gitosis-admin.git`` with its post-update hook, makes the first
commit (``keydir/USER.pub`` and a gitosis.conf that lets USER write
gitosis-admin) unless the repository has one, creates ``~/.ssh`` (0700), runs
the post-update actions and points ``~/.gitosis.conf`` at the admin repository's
``gitosis.conf``. Running it again changes nothing but the derived files.
"""

from __future__ import annotations

import argparse
import configparser
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence

from reconciler.gitosis import app
from reconciler.gitosis.authorized_keys import SERVE
from reconciler.gitosis.config import generated_files_dir, repository_dir
from reconciler.gitosis.names import is_safe_user
from reconciler.gitosis.repositories import init_bare
from reconciler.gitosis.run_hook import post_update
from reconciler.server.common import atomic_symlink, atomic_write

log = logging.getLogger("gitosis.init")

ADMIN_REPOSITORY = "gitosis-admin.git"
COMMIT_MESSAGE = "Automatic creation of gitosis repository."
RUN_HOOK = "gitosis-run-hook"


def initial_config(user: str) -> str:
    # What gitosis writes: "[gitosis]" first, then the admin group as
    # RawConfigParser.write renders it (a blank line after each section).
    return f"[gitosis]\n\n[group gitosis-admin]\nmembers = {user}\nwritable = gitosis-admin\n\n"


def post_update_hook(run_hook: str = RUN_HOOK) -> str:
    return f"#!/bin/sh\nset -e\n{shlex.quote(run_hook)} post-update\ngit update-server-info\n"


def extract_user(pubkey: str) -> str:
    fields = pubkey.split()
    if len(fields) < 2:
        raise app.GitosisError("Cannot parse user from SSH public key.")
    user = fields[-1]
    if not is_safe_user(user):
        raise app.GitosisError(f"Username contains not allowed characters: {user!r}")
    return user


def has_initial_commit(git_dir: str) -> bool:
    proc = subprocess.run(
        ["git", f"--git-dir={git_dir}", "rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return proc.returncode == 0


def initial_commit(git_dir: str, user: str, pubkey: str) -> None:
    """One commit on master with the admin's key and gitosis.conf (git fast-import)."""
    files = [
        (f"keydir/{user}.pub", pubkey.encode()),
        ("gitosis.conf", initial_config(user).encode()),
    ]
    stream = b""
    for mark, (_path, content) in enumerate(files, start=1):
        stream += b"blob\nmark :%d\ndata %d\n%s\n" % (mark, len(content), content)
    message = COMMIT_MESSAGE.encode()
    stream += b"commit refs/heads/master\n"
    stream += b"committer Gitosis Admin <%s> now\n" % user.encode()
    stream += b"data %d\n%s\n" % (len(message), message)
    for mark, (path, _content) in enumerate(files, start=1):
        stream += b"M 100644 :%d %s\n" % (mark, path.encode())
    subprocess.run(
        ["git", f"--git-dir={git_dir}", "fast-import", "--quiet", "--date-format=now"],
        input=stream,
        stdout=sys.stderr,
        check=True,
    )


def init_admin_repository(git_dir: str, user: str, pubkey: str) -> None:
    init_bare(git_dir, initial_branch="master")
    hook = os.path.join(git_dir, "hooks", "post-update")
    if not os.path.exists(hook):
        # Like git's templates, an existing hook is left alone. Written aside and
        # renamed: an init killed here must not leave an empty executable hook
        # that a later run would take for gitosis's.
        os.makedirs(os.path.dirname(hook), exist_ok=True)
        hook_text = post_update_hook(app.sibling_command(RUN_HOOK))
        atomic_write(hook, hook_text.encode("utf-8"), 0o755)
    os.chmod(hook, 0o755)  # noqa: S103 - a hook must be executable
    if not has_initial_commit(git_dir):
        log.info("Making initial commit...")
        initial_commit(git_dir, user, pubkey)


def symlink_config(git_dir: str) -> None:
    atomic_symlink(os.path.join(git_dir, "gitosis.conf"), os.path.expanduser("~/.gitosis.conf"))


def _handle(config: configparser.RawConfigParser, args: argparse.Namespace) -> int:
    os.umask(0o022)
    log.info("Reading SSH public key...")
    pubkey = sys.stdin.readline()
    user = extract_user(pubkey)
    log.info("Admin user is %r", user)
    log.info("Creating generated files directory...")
    os.makedirs(generated_files_dir(config), exist_ok=True)
    log.info("Creating repository structure...")
    repositories = repository_dir(config)
    os.makedirs(repositories, exist_ok=True)
    admin_repository = os.path.join(repositories, ADMIN_REPOSITORY)
    try:
        init_admin_repository(admin_repository, user, pubkey)
    except subprocess.CalledProcessError as e:
        raise app.GitosisError(f"Cannot initialise {admin_repository}: {e}") from e
    log.info("Running post-update hook...")
    ssh_dir = os.path.expanduser("~/.ssh")
    if not os.path.isdir(ssh_dir):
        os.makedirs(ssh_dir, mode=0o700)
    post_update(admin_repository, app.sibling_command(SERVE))
    log.info("Symlinking ~/.gitosis.conf to repository...")
    symlink_config(admin_repository)
    log.info("Done.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = app.make_parser("gitosis-init", "Initialize a user account for use with gitosis")
    return app.run(parser, argv, _handle, logger="gitosis.init", config_optional=True)


if __name__ == "__main__":
    sys.exit(main())
