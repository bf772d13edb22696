"""What every gitosis command does first: logging, options, reading gitosis.conf.

gitosis logs through ``logging.basicConfig()``, so its messages reach the user as
``LEVEL:LOGGER:MESSAGE`` on stderr (``ERROR:gitosis.serve.main:Repository read
access denied``), at level WARNING unless ``[gitosis] loglevel`` says otherwise.
"""

from __future__ import annotations

import argparse
import configparser
import logging
import os
import shutil
import sys
from collections.abc import Callable, Sequence

from reconciler.gitosis.config import get, new_config

log = logging.getLogger("gitosis.app")

Handler = Callable[[configparser.RawConfigParser, argparse.Namespace], int]


class GitosisError(Exception):
    """An error the command reports as one log line before exiting with status 1."""


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=os.path.expanduser("~/.gitosis.conf"),
        help="read config from FILE",
    )
    return parser


def setup_loglevel(config: configparser.RawConfigParser) -> None:
    name = get(config, "gitosis", "loglevel")
    if name is None:
        return
    level = logging.getLevelName(name)
    if isinstance(level, int):
        logging.getLogger().setLevel(level)
    else:
        log.warning("Ignored invalid loglevel configuration: %r", name)


def run(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    handler: Handler,
    *,
    logger: str,
    config_optional: bool = False,
) -> int:
    """Parse ``argv``, read the config, call ``handler``; turn GitosisError into exit 1."""
    logging.basicConfig()
    args = parser.parse_args(argv)
    config = new_config()
    try:
        with open(args.config, encoding="utf-8") as conffile:
            config.read_file(conffile, source=args.config)
    except FileNotFoundError as e:
        # gitosis-init runs before the file exists.
        if not config_optional:
            log.error("Configuration does not exist: %s", e)
            return 1
    except (OSError, UnicodeDecodeError, configparser.Error) as e:
        log.error("Unable to read config file: %s", e)
        return 1
    setup_loglevel(config)
    try:
        return handler(config, args)
    except GitosisError as e:
        logging.getLogger(logger).error("%s", e)
        return 1


def sibling_command(name: str) -> str:
    """An absolute path to the installed command ``name``, or the bare name.

    The command that is running (``sys.argv[0]``) sits in the installation's bin
    directory; its sibling is preferred over a PATH lookup, so sshd's forced
    commands and git's hooks need no PATH. A path with a space or a quote cannot
    appear in an authorized_keys ``command="..."``, so it falls back to the name.
    """
    candidates = []
    if sys.argv and sys.argv[0]:
        candidates.append(os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), name))
    found = shutil.which(name)
    if found:
        candidates.append(os.path.abspath(found))
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK) and not any(c in path for c in ' "'):
            return path
    return name
