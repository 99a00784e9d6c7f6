"""What the benchmark scripts of this folder share: the command line a result records, writing its
JSON and Markdown pair, and running ``main`` as a script (a GrmpError is one line, never a traceback)."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Callable

# Where the default bundle, the corpora and the bootstrap weights are looked up: part of a command.
LOCATION_ENV = ("GRMP_EDGE_RUNS", "GRMP_EDGE_CACHE")


def command_line(script: str, argv: list[str]) -> str:
    """``python benchmarks/<script> ARGS`` as typed, preceded by the location variables that were set."""
    env = [f"{k}={shlex.quote(os.environ[k])}" for k in LOCATION_ENV if os.environ.get(k)]
    return " ".join([*env, f"python benchmarks/{script}", shlex.join(argv)]).strip()


def write_result(out: Path, result: dict, page: str) -> None:
    """``result`` as JSON at ``out`` and ``page`` as Markdown beside it (``.md``), each written whole."""
    from grmp_edge.artifacts import atomic_write_json, atomic_write_text

    atomic_write_json(out, result)
    atomic_write_text(out.with_suffix(".md"), page)
    print(f"wrote {out} and {out.with_suffix('.md')}")


def run_script(main: Callable[[list[str]], int]) -> None:
    """Exit with ``main(sys.argv[1:])``; a GrmpError exits 1 with its one-line message."""
    from grmp_edge.errors import GrmpError

    try:
        sys.exit(main(sys.argv[1:]))
    except GrmpError as exc:
        sys.exit(f"error: {exc}")
