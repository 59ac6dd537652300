"""`nerft prepare`: convert, validate and register CLUE NER data for LLaMA-Factory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nerft.cli.common import log, print_json, split_labels
from nerft.cli.options import JsonOutput

NAME = "prepare"


def command(
    train: Annotated[
        Path,
        typer.Option(
            "--train", help="Training records: CLUE NER JSON (lines, array or stream) or char-level BIO/BMES."
        ),
    ],
    dev: Annotated[Optional[Path], typer.Option("--dev", help="Dev records; when given, train is not split.")] = None,
    test: Annotated[Optional[Path], typer.Option("--test", help="Test records (labels optional).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Where the alpaca files and dataset_info.json go.")] = Path(
        "data/dataset"
    ),
    name: Annotated[
        str, typer.Option("--name", help="Dataset name prefix: entries are NAME_train, NAME_dev, NAME_test.")
    ] = "cluener",
    val_size: Annotated[
        float, typer.Option("--val-size", help="Share of train held out as dev when --dev is not given (0 disables).")
    ] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the train/dev split.")] = 42,
    labels: Annotated[
        Optional[str], typer.Option("--labels", help="Comma-separated allowed labels; others are errors.")
    ] = None,
    prompt: Annotated[
        str, typer.Option("--prompt", help="compact (few tokens) or seed (the tutorials' prompt).")
    ] = "compact",
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Write the valid records and report the skipped ones.")
    ] = False,
    json_output: JsonOutput = False,
) -> None:
    """Convert CLUE NER records to alpaca JSON, validate them and register them in dataset_info.json."""
    from nerft.data.prepare import prepare_dataset

    label_list = split_labels(labels)
    result = prepare_dataset(
        train=train,
        dev=dev,
        test=test,
        out_dir=out,
        name=name,
        val_size=val_size,
        seed=seed,
        labels=label_list,
        prompt=prompt,
        skip_invalid=skip_invalid,
    )
    for finding in result.findings[:50]:
        log(str(finding))
    if len(result.findings) > 50:
        log(f"... and {len(result.findings) - 50} more findings")
    if json_output:
        print_json(result.to_dict())
    else:
        typer.echo(format_summary(result))


def format_summary(result) -> str:
    splits = result.splits
    labels = sorted({label for split in splits.values() for label in split.entities})
    header = ["", *splits]
    rows = [["records", *(str(s.records) for s in splits.values())]]
    rows += [[label, *(str(s.entities.get(label, 0)) for s in splits.values())] for label in labels]
    rows.append(["mean chars", *(f"{s.mean_chars:.1f}" for s in splits.values())])
    rows.append(["max chars", *(str(s.max_chars) for s in splits.values())])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]
    lines.append("")
    for split, dataset in result.dataset_names.items():
        lines.append(f"{dataset:<20} {result.out_dir / splits[split].file}")
    lines.append(f"registered in {result.out_dir / 'dataset_info.json'} (prompt format: {result.prompt})")
    skipped = f", {result.skipped} invalid record(s) skipped" if result.skipped else ""
    lines.append(f"{len(result.errors)} errors / {len(result.warnings)} warnings{skipped}")
    return "\n".join(lines)
