"""`nerft train`: prepare the data, render LLaMA-Factory's YAML into a run folder, run `llamafactory-cli train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nerft.cli.common import fail, log

NAME = "train"


def command(
    config: Annotated[
        str, typer.Argument(help="A nerft YAML config, or a preset name: tiny-cpu, smollm2-cpu, qwen7b, qwen7b-qlora.")
    ],
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-o", help="The run folder (default: output.output_dir, else runs/CONFIG_NAME)."),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config value: section.key=value (repeatable).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the rendered LLaMA-Factory YAML and run nothing.")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --output-dir from its latest checkpoint.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Delete the run in --output-dir and start over.")] = False,
    nproc_per_node: Annotated[
        int | None,
        typer.Option(
            "--nproc-per-node",
            help="Training processes on this machine (torchrun); default: one per visible GPU, one without GPUs.",
        ),
    ] = None,
    nnodes: Annotated[int | None, typer.Option("--nnodes", help="Machines taking part (torchrun).")] = None,
    node_rank: Annotated[
        int | None, typer.Option("--node-rank", help="This machine's rank, 0 on the master (torchrun).")
    ] = None,
    master_addr: Annotated[
        str | None, typer.Option("--master-addr", help="Address of the rank-0 machine (torchrun).")
    ] = None,
    master_port: Annotated[
        int | None, typer.Option("--master-port", help="A free port on the rank-0 machine (torchrun).")
    ] = None,
    deepspeed: Annotated[
        str | None, typer.Option("--deepspeed", help="zero2, zero3 (conf/ds_z*_config.json) or a DeepSpeed JSON file.")
    ] = None,
) -> None:
    """Fine-tune a model with LLaMA-Factory from a nerft config (checks everything before launching)."""
    from nerft.config.load import Override
    from nerft.training.train import train

    overrides = list(set_ or [])
    for key, value in (
        ("launch.nproc_per_node", nproc_per_node),
        ("launch.nnodes", nnodes),
        ("launch.node_rank", node_rank),
        ("launch.master_addr", master_addr),
        ("launch.master_port", master_port),
        ("method.deepspeed", deepspeed),
    ):
        if value is not None:
            overrides.append(Override(key, value))  # typed already: set as it is, not parsed again
    result = train(
        config, output_dir=output_dir, overrides=overrides, dry_run=dry_run, resume=resume, force=force, log=log
    )
    if dry_run:
        typer.echo(result.rendered_yaml, nl=False)
        return
    if result.exit_code != 0:
        fail(
            f"llamafactory-cli train exited with code {result.exit_code} (its log is above); run folder: {result.run_dir}",
            result.exit_code,
        )
    typer.echo(result.worker_note if result.summary is None else result.summary.format(extra_lines=result.report))
