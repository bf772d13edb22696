"""The ``reconcile`` command line: thin, one function per subcommand.

Each subcommand imports its implementation from ``reconciler.commands`` lazily,
so ``reconcile --help`` does not pay for paramiko, pydantic or GitPython.
Every implementation returns an exit code (DESIGN.md section 4): 0 nothing to do,
1 error, 2 changes pending, 3 conflicts that need a human.
"""

from __future__ import annotations

import atexit
import gc
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from reconciler.errors import ReconcilerError

# At exit Python tears the modules down with several full collections, each walking
# every object still alive (pydantic's, paramiko's, rich's...): about 0.1 s of every
# command. Frozen objects are skipped; every file a command writes is closed (and
# renamed into place) long before exit, so nothing waits on those collections.
atexit.register(gc.freeze)

app = typer.Typer(
    name="reconcile",
    help="Run an active-active cluster of gitosis servers from cluster.d/.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: rich help formatting imports markdown-it and costs ~0.2 s.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DirOption = Annotated[
    Path,
    typer.Option(
        "-C",
        "--directory",
        help="The gitosis-admin checkout holding cluster.d/.",
        file_okay=False,
    ),
]
ServerOption = Annotated[
    list[str] | None,
    typer.Option("--server", help="Only this server (repeatable)."),
]
ReplaceForeignOption = Annotated[
    bool,
    typer.Option(
        "--replace-foreign", help="Replace hooks and remotes the reconciler did not write."
    ),
]
PruneOption = Annotated[
    bool,
    typer.Option(
        "--prune",
        help="Remove the reconciler's hook and remotes from repositories no longer in cluster.d/.",
    ),
]


class StatusFormat(StrEnum):
    text = "text"
    json = "json"
    prometheus = "prometheus"


class LogFormatChoice(StrEnum):
    logfmt = "logfmt"
    json = "json"


JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
TextfileOption = Annotated[
    Path | None,
    typer.Option(
        "--textfile",
        help="Also write Prometheus metrics atomically to DIR/reconcile.prom "
        "(node_exporter's textfile collector).",
        file_okay=False,
        metavar="DIR",
    ),
]


@app.command()
def validate(directory: DirOption = Path(".")) -> int:
    """Check cluster.d/ offline: schema, references, keys, rendered files fresh."""
    from reconciler.commands import validate as command

    return command.run(directory)


@app.command()
def render(directory: DirOption = Path(".")) -> int:
    """Write gitosis.conf and keydir/ from cluster.d/."""
    from reconciler.commands import render as command

    return command.run(directory)


@app.command()
def plan(
    directory: DirOption = Path("."),
    server: ServerOption = None,
    json_output: JsonOption = False,
    detailed_exitcode: Annotated[
        bool,
        typer.Option(
            "--detailed-exitcode", help="Exit 2 when changes are pending, 3 on conflicts."
        ),
    ] = False,
    trust_new_host_keys: Annotated[
        bool, typer.Option("--trust-new-host-keys", help="Record unknown host keys.")
    ] = False,
    replace_foreign: ReplaceForeignOption = False,
    prune: PruneOption = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "-out",
            "--out",
            help="Save the complete plan to FILE, for 'reconcile apply FILE'.",
            dir_okay=False,
            metavar="FILE",
        ),
    ] = None,
) -> int:
    """Show what apply would change on each server."""
    from reconciler.commands import plan as command

    return command.run(
        directory,
        servers=server or [],
        json_output=json_output,
        detailed_exitcode=detailed_exitcode,
        trust_new_host_keys=trust_new_host_keys,
        replace_foreign=replace_foreign,
        prune=prune,
        out=out,
    )


@app.command()
def apply(
    plan_file: Annotated[
        Path | None,
        typer.Argument(
            help="A plan saved with 'reconcile plan -out FILE': carry out exactly that.",
            dir_okay=False,
            metavar="[FILE]",
        ),
    ] = None,
    directory: DirOption = Path("."),
    server: ServerOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_output: JsonOption = False,
    cron: Annotated[
        bool, typer.Option("--cron", help="Quiet unattended run with a lock (for cron).")
    ] = False,
    trust_new_host_keys: Annotated[
        bool, typer.Option("--trust-new-host-keys", help="Record unknown host keys.")
    ] = False,
    replace_foreign: ReplaceForeignOption = False,
    prune: PruneOption = False,
    textfile: TextfileOption = None,
    log_format: Annotated[
        LogFormatChoice,
        typer.Option(
            "--log-format",
            help="With --cron: one line per change or error as logfmt (key=value) or json.",
        ),
    ] = LogFormatChoice.logfmt,
) -> int:
    """Change every server to match cluster.d/, or carry out a saved plan."""
    from reconciler.commands import apply as command

    return command.run(
        directory,
        servers=server or [],
        yes=yes,
        json_output=json_output,
        cron=cron,
        trust_new_host_keys=trust_new_host_keys,
        replace_foreign=replace_foreign,
        prune=prune,
        textfile=textfile,
        log_format="json" if log_format is LogFormatChoice.json else "logfmt",
        plan_file=plan_file,
    )


@app.command()
def status(
    directory: DirOption = Path("."),
    json_output: JsonOption = False,
    output_format: Annotated[
        StatusFormat | None,
        typer.Option(
            "--format",
            help="text (default), json, or prometheus (the text exposition format).",
        ),
    ] = None,
    textfile: TextfileOption = None,
) -> int:
    """Replication health, ref by ref."""
    from reconciler.commands import status as command

    chosen = None if output_format is None else output_format.value
    if json_output and chosen not in (None, "json"):
        raise ReconcilerError(f"--json and --format {chosen} ask for two formats; choose one")
    return command.run(directory, json_output=json_output, output_format=chosen, textfile=textfile)


@app.command("import")
def import_(directory: DirOption = Path(".")) -> int:
    """Write cluster.d/ from an existing gitosis.conf and keydir/."""
    from reconciler.commands import import_ as command

    return command.run(directory)


@app.command("install-hooks")
def install_hooks(directory: DirOption = Path(".")) -> int:
    """Install the pre-push check in the admin checkout."""
    from reconciler.commands import install_hooks as command

    return command.run(directory)


def print_error(message: str) -> None:
    sys.stderr.write(f"error: {message}\n" if "\n" not in message else f"{message}\n")


def main(argv: list[str] | None = None) -> int:
    try:
        result = app(args=argv, prog_name="reconcile", standalone_mode=False)
    except typer.Abort:
        print_error("aborted.")
        return 1
    except typer.TyperException as exc:
        # Usage errors exit 1, not click's 2: exit code 2 means "changes pending".
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            print_error(exc.format_message())
        return 1
    except ReconcilerError as exc:
        print_error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        print_error("interrupted.")
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
