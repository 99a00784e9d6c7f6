"""The ``grmp-edge`` typer app: assembles the command groups and maps errors and signals to exit statuses.

Each command group's options live in its own module of this package; this module only
assembles them and turns a :class:`~grmp_edge.errors.GrmpError` into one line and a non-zero exit.

Command modules import their heavy dependencies inside the command body, so ``--help`` is instant
and works on a machine with only the base install.

Exit statuses (the README's "Signal and exit-code contract"): 0 done, 2 the command could not do its
job (one ``error:`` line: bad input, or nothing produced), 130 after SIGINT, 143 after SIGTERM.
Both signals raise :class:`Interrupted` on the main thread, so that every ``with`` and ``finally``
block (staging folders, temporary files, run folders) cleans up, whichever signal it was.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Optional

import typer

from grmp_edge import __version__
from grmp_edge.cli.data import data_app
from grmp_edge.cli.doctor import doctor
from grmp_edge.errors import GrmpError
from grmp_edge.cli.export import export
from grmp_edge.cli.quickstart import quickstart
from grmp_edge.cli.bench import bench
from grmp_edge.limits import check_memory, check_range
from grmp_edge.runs import record_invocation
from grmp_edge.cli.run import run
from grmp_edge.cli.train import evaluate, train

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
    max_image_pixels: Optional[int] = typer.Option(
        None, "--max-image-pixels", metavar="N",
        help="Refuse image files over N pixels (width x height) before decoding them (default 64000000, "
             "or $GRMP_EDGE_MAX_IMAGE_PIXELS). Applies to every command that reads images."),
) -> None:
    """grmp-edge: few-shot CLIP image quality assessment for edge devices."""
    if max_image_pixels is not None:
        from grmp_edge.images import MAX_PIXELS_ENV

        check_range("--max-image-pixels", max_image_pixels, 1)
        # 16-bit colour is decoded at 6 bytes a pixel, then converted: one image must fit.
        check_memory("--max-image-pixels", max_image_pixels, 12, "decoding one image")
        # The environment carries it to every process this command starts (bench variants, loaders).
        os.environ[MAX_PIXELS_ENV] = str(max_image_pixels)


class Interrupted(BaseException):
    """SIGINT or SIGTERM, raised on the main thread. Not an Exception, so no ``except Exception``
    swallows it, and not KeyboardInterrupt, which click turns into "Aborted!" and exit status 1."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum, _frame) -> None:
    raise Interrupted(signum)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app, mapping user errors to one line and exit status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    record_invocation(argv)
    # Signal handlers can only be set from the main thread (an embedding caller may use another).
    on_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS} if on_main else {}
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
        return 128 + signal.SIGINT
    except Interrupted as exc:
        typer.echo(f"stopped by {exc}", err=True)
        return 128 + exc.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0

