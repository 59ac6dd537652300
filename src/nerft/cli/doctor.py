"""`nerft doctor`: check this machine, and whether a training config can run on it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nerft.cli.common import print_json
from nerft.cli.options import JsonOutput

NAME = "doctor"


def command(
    config: Annotated[
        Optional[Path],
        typer.Option(
            "--config",
            help="A training config or preset (tiny-cpu, smollm2-cpu, qwen7b, qwen7b-qlora), or a run's llamafactory_train.yaml: can it run here?",
        ),
    ] = None,
    json_output: JsonOutput = False,
) -> None:
    """Check Python, torch, the NVIDIA driver, GPUs and package versions; with --config, estimate the GPU memory it needs. Exits 1 when something fails."""
    from nerft.doctor import diagnose, diagnosis, format_diagnosis
    from nerft.training.plan import read_plan

    snapshot = diagnosis.take_snapshot()
    plan = read_plan(config, machine=snapshot.machine()) if config is not None else None
    result = diagnose(plan=plan, snapshot=snapshot)
    if json_output:
        print_json(result.to_dict())
    else:
        typer.echo(format_diagnosis(result))
    if not result.ok:
        raise typer.Exit(1)
