"""`nerft convert`: a file of records (or of `nerft predict` rows) written for an annotation tool.

The per-record converters (Label Studio, doccano, CLUE) are `nerft.data.annotation`'s.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from nerft.data.annotation import (
    FORMATS,
    label_studio_config,
    prediction_scores,
    record_of_prediction,
    to_doccano,
    to_label_studio,
)
from nerft.data.load import load_records
from nerft.data.readers import detect_format, iter_json_objects
from nerft.data.records import CluenerRecord, Finding
from nerft.errors import ConfigError, DataError
from nerft.io import write_json_atomic, write_jsonl_atomic, write_text_atomic, written_together


def is_predictions_file(path) -> bool:
    """Whether the file's first object is a `nerft predict` row (raw answer and placed entities)."""
    if detect_format(path) != "json":
        return False
    for _, value in iter_json_objects(path):
        return isinstance(value, dict) and "predict" in value and isinstance(value.get("entities"), list)
    return False


def read_prediction_records(path) -> list[CluenerRecord]:
    """The rows of a `nerft predict` file as records of their placed entities."""
    return [record for record, _ in read_prediction_rows(path)]


def read_prediction_rows(path) -> list[tuple[CluenerRecord, dict]]:
    """The rows of a `nerft predict` file, each with its record of placed entities."""
    records = []
    for line, value in iter_json_objects(path):
        if isinstance(value, Finding):
            raise DataError(str(value))
        entities = value.get("entities")
        if (
            not isinstance(value.get("text"), str)
            or not isinstance(entities, list)
            or not all(isinstance(e, dict) and {"label", "text", "start", "end"} <= set(e) for e in entities)
        ):
            raise DataError(
                f'{path}:{line}: expected a `nerft predict` row with "text" and "entities" '
                '[{"label", "text", "start", "end"}] (predict them again with this nerft)'
            )
        records.append((record_of_prediction(value), value))
    return records


def convert_file(source, *, to: str, out, model_version: str = "nerft", labels: Iterable[str] | None = None) -> dict:
    """Write the records of `source` (any file `nerft prepare` reads, or a `nerft predict` file) in
    the format `to`; for Label Studio also the labelling config beside it (`OUT.label_config.xml`),
    with `labels` and every label the records have (a person correcting them may need a label the
    model never predicted). Predictions become Label Studio `predictions` (pre-annotations) or doccano labels."""
    if to not in FORMATS:
        raise ConfigError(f"--to {to!r}: expected one of {', '.join(FORMATS)}")
    predictions = is_predictions_file(source)
    rows = read_prediction_rows(source) if predictions else [(record, None) for record in load_records(source)]
    return write_converted(rows, to=to, out=out, model_version=model_version, labels=labels, source=predictions)


def label_config_path(out: str | os.PathLike) -> Path:
    """The Label Studio labelling config written beside tasks `out`: `OUT_STEM.label_config.xml`."""
    out = Path(out)
    return out.with_name(out.stem + ".label_config.xml")


def write_converted(
    rows: list[tuple[CluenerRecord, dict | None]],
    *,
    to: str,
    out,
    model_version: str = "nerft",
    labels: Iterable[str] | None = None,
    source: bool = False,
) -> dict:
    """Write records (with their `nerft predict` row, for predictions: `source` True) in the format
    `to` (one of `FORMATS`); the entities' confidences go along (`score` in Label Studio, `scores`
    in doccano)."""
    predictions = source
    records = [record for record, _ in rows]
    scores = [prediction_scores(row) if row is not None else None for _, row in rows]
    out = Path(out)
    written = {
        "records": len(records),
        "entities": sum(len(r.entities) for r in records),
        "from": "predictions" if predictions else "records",
        "to": to,
        "out": str(out),
    }
    with written_together(out) as stage:  # its lock covers the labelling config beside it
        if to == "doccano":
            write_jsonl_atomic(stage(out), [to_doccano(record, scores=score) for record, score in zip(records, scores)])
        elif to == "clue":
            write_jsonl_atomic(stage(out), [record.to_clue() for record in records])
        else:
            write_json_atomic(
                stage(out),
                [
                    to_label_studio(
                        record,
                        as_prediction=predictions,
                        model_version=model_version,
                        scores=score,
                        score=row.get("confidence") if row is not None else None,
                    )
                    for (record, row), score in zip(rows, scores)
                ],
            )
            config = label_config_path(out)
            write_text_atomic(
                stage(config), label_studio_config([*(labels or ()), *(e.label for r in records for e in r.entities)])
            )
            written["label_config"] = str(config)
    return written
