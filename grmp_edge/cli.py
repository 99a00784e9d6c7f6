"""The ``grmp-edge`` command line: a thin typer app that parses and calls.

Each command's options live beside the code they drive (``<area>/command.py``); this module only
assembles them and turns a :class:`~grmp_edge.errors.GrmpError` into one line and a non-zero exit.
Command modules import their heavy dependencies inside the command body, so ``--help`` is instant
and works on a machine with only the base install.
"""
from __future__ import annotations

import sys

import typer

from grmp_edge import __version__
from grmp_edge.data.command import data_app
from grmp_edge.doctor import doctor
from grmp_edge.errors import GrmpError
from grmp_edge.export.command import export
from grmp_edge.quickstart import quickstart
from grmp_edge.report.command import bench
from grmp_edge.runs import record_invocation
from grmp_edge.runtime.command import run
from grmp_edge.train.command import evaluate, train

app = typer.Typer(
    name="grmp-edge",
    help="Few-shot CLIP image quality (GRMP-IQA): train, compile for the edge, score camera frames.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data_app, name="data")
app.command("train")(train)
app.command("eval")(evaluate)
app.command("export")(export)
app.command("run")(run)
app.command("bench")(bench)
app.command("quickstart")(quickstart)
app.command("doctor")(doctor)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"grmp-edge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """grmp-edge: few-shot CLIP image quality assessment for edge devices."""


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app, mapping user errors to one line and exit status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    record_invocation(argv)
    try:
        app(args=argv, prog_name="grmp-edge")
    except SystemExit as exc:  # typer's standalone mode ends every command this way
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except GrmpError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
