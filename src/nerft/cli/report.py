"""`nerft report`: Markdown and HTML pages for training runs, side by side when there are several."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nerft.cli.common import print_json
from nerft.cli.options import JsonOutput

NAME = "report"


def command(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(help="Run folders made by `nerft train` (or LLaMA-Factory output folders).", show_default=False),
    ],
    out: Annotated[
        Optional[Path],
        typer.Option("--out", help="Where the pages go (default: RUN_DIR/report for one run, reports/ for several)."),
    ] = None,
    json_output: JsonOutput = False,
) -> None:
    """Write a page per run (config, loss curve, eval table and chart) and, for several runs, a comparison with per-label F1 differences."""
    from nerft.reporting import write_run_reports

    written = write_run_reports(run_dirs, out=out)
    if json_output:
        print_json({"pages": [str(path) for path in written.pages], "charts": [str(path) for path in written.charts]})
    else:
        for path in [*written.pages, *written.charts]:
            typer.echo(str(path))
