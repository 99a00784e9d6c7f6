"""What the benchmark scripts of this folder share: the command line a result records and writing its
JSON and Markdown pair (they run as scripts through ``grmp_edge.errors.run_script``)."""
from __future__ import annotations

import os
import shlex
from pathlib import Path

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
