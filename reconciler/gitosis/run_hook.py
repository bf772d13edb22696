"""``gitosis-run-hook post-update``: apply a push to gitosis-admin.

Run by ``hooks/post-update`` of ``gitosis-admin.git`` with ``GIT_DIR`` set:

1. export the pushed tree afresh into ``GIT_DIR/gitosis-export``;
2. move its ``gitosis.conf`` to ``GIT_DIR/gitosis.conf`` (where ``~/.gitosis.conf``
   points) and read it;
3. write descriptions, ``projects.list`` and the ``git-daemon-export-ok`` flags;
4. regenerate authorized_keys from ``gitosis-export/keydir``.
"""

from __future__ import annotations

import argparse
import configparser
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from reconciler.gitosis import app
from reconciler.gitosis.authorized_keys import SERVE, write_authorized_keys
from reconciler.gitosis.config import authorized_keys_path, new_config
from reconciler.gitosis.repositories import refresh_generated_files

log = logging.getLogger("gitosis.run_hook")


def export_tree(git_dir: str, path: str) -> None:
    """Check out HEAD's tree into ``path`` without touching the repository's index."""
    os.makedirs(path, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gitosis-export-") as tmp:
        env = dict(os.environ)
        env["GIT_INDEX_FILE"] = os.path.join(tmp, "index")
        env.pop("GIT_WORK_TREE", None)
        git_dir = os.path.abspath(git_dir)
        subprocess.run(
            ["git", f"--git-dir={git_dir}", "read-tree", "HEAD"],
            env=env,
            stdout=sys.stderr,
            check=True,
        )
        subprocess.run(
            [
                "git",
                f"--git-dir={git_dir}",
                f"--work-tree={os.path.abspath(path)}",
                "checkout-index",
                "--all",
                "--force",
            ],
            env=env,
            cwd=path,
            stdout=sys.stderr,
            check=True,
        )


EXPORT_TEMP_PREFIX = ".gitosis-export-"


def post_update(git_dir: str, serve: str = SERVE) -> None:
    export = os.path.join(git_dir, "gitosis-export")
    # Checked out aside and renamed into place whole: a run killed midway (or one
    # that overlaps another) never leaves git's half-written files in the export.
    for name in os.listdir(git_dir):
        if name.startswith(EXPORT_TEMP_PREFIX):
            shutil.rmtree(os.path.join(git_dir, name), ignore_errors=True)
    fresh = tempfile.mkdtemp(prefix=EXPORT_TEMP_PREFIX, dir=git_dir)
    try:
        export_tree(git_dir, fresh)
        shutil.rmtree(export, ignore_errors=True)
        os.rename(fresh, export)
    except subprocess.CalledProcessError as e:
        raise app.GitosisError(f"Cannot export {git_dir}: {e}") from e
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    exported_conf = os.path.join(export, "gitosis.conf")
    conf = os.path.join(git_dir, "gitosis.conf")
    if not os.path.exists(exported_conf):
        raise app.GitosisError("gitosis.conf is missing from the pushed tree")
    os.rename(exported_conf, conf)
    # gitosis merges the new file into the configuration it started with, so an
    # option removed by this push kept its effect until the next one; a fresh read
    # applies the pushed file as it is.
    config = new_config()
    try:
        config.read(conf, encoding="utf-8")
    except configparser.Error as e:
        raise app.GitosisError(f"Unable to read config file: {e}") from e
    refresh_generated_files(config)
    keydir = os.path.join(export, "keydir")
    if not os.path.isdir(keydir):
        raise app.GitosisError("keydir is missing from the pushed tree")
    write_authorized_keys(authorized_keys_path(config), keydir, serve)


def _handle(config: configparser.RawConfigParser, args: argparse.Namespace) -> int:
    os.umask(0o022)
    git_dir = os.environ.get("GIT_DIR")
    if git_dir is None:
        log.error("Must have GIT_DIR set in enviroment")  # sic: gitosis's message
        return 1
    if args.hook != "post-update":
        log.warning("Ignoring unknown hook: %r", args.hook)
        return 0
    log.info("Running hook %s", args.hook)
    post_update(git_dir, app.sibling_command(SERVE))
    log.info("Done.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = app.make_parser("gitosis-run-hook", "Perform gitosis actions for a git hook")
    parser.add_argument("hook", metavar="HOOK")
    return app.run(parser, argv, _handle, logger="gitosis.run_hook")


if __name__ == "__main__":
    sys.exit(main())
