"""The ``grmp-edge`` command line: typer commands that parse options and call the library.

``root`` assembles the app and owns exit statuses; each other module holds one command group's
options. Nothing outside this package imports typer or calls into it.
"""
from grmp_edge.cli.root import app, main

__all__ = ["app", "main"]
