"""Scoring a model rather than a file: predict the gold sentences, then score the predictions.

`nerft eval --run RUN --gold FILE` predicts with the run's weights (hf or vllm), `nerft eval
--endpoint URL --gold FILE` through a server; both write into one folder (by default
`<run>/eval/<gold name>/`): `predictions.jsonl` (resumable, like `nerft predict --out`),
`report.json` and `errors.jsonl`.

Two CLUE scores are reported (`nerft.metrics.evaluate`): every entity the answer names, and
without the predicted entities that are not substrings of their sentence (they can never be right,
and `nerft predict` drops them by default); the gap between the two is what a model loses by
inventing or rewriting names.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nerft.errors import ConfigError
from nerft.inference.options import EngineOptions
from nerft.inference.predict import predict
from nerft.inference.predictions import PredictionCounts
from nerft.metrics.confidence import row_confidences
from nerft.metrics.evaluate import EvalReport, Evaluator, stream_gold
from nerft.runfolder import PREDICTIONS, RunFolder, RunInfo


@dataclass
class ModelEvaluation:
    report: EvalReport  # both CLUE scores, spans, errors
    counts: PredictionCounts
    out_dir: Path

    def to_dict(self) -> dict:
        return {**self.report.to_dict(), "prediction": self.counts.to_dict()}

    def format(self) -> str:
        return "\n".join(
            [
                self.counts.summary(self.out_dir / PREDICTIONS),
                "",
                self.report.format(),
                f"predictions, report.json and errors.jsonl in {self.out_dir}",
            ]
        )


def scoring_folder(gold: str | os.PathLike, run: RunInfo | None, out_dir: str | os.PathLike | None) -> Path:
    """Where an evaluation of a model goes: `out_dir`, else `<run>/eval/<gold name>/`."""
    if out_dir is not None:
        return Path(out_dir)
    if run is None:
        raise ConfigError("--endpoint without --run needs --out-dir (where predictions and the report go)")
    return RunFolder(run.run_dir).eval_dir(gold)


def predict_and_score(
    *,
    gold: str | os.PathLike,
    run: RunInfo | None = None,
    options: EngineOptions = EngineOptions(),
    labels: list[str] | None = None,
    out_dir: str | os.PathLike | None = None,
    on_error: Callable[[dict], None] | None = None,
    min_confidence: float | None = None,
    restart: bool = False,
) -> ModelEvaluation:
    """Predict every gold sentence (resumably, into `out_dir/predictions.jsonl`) and score each
    answer as it comes (`nerft.metrics.evaluate.Evaluator`): the gold file is read as a stream,
    twice (once by the predictor, once beside it for scoring), so memory stays flat.

    The prompt format is the run's (`options.prompt` names one for an endpoint without a run), and so are
    the dataset's labels unless `labels` names them; `on_error` gets each wrong sentence's row;
    `restart` predicts everything again instead of resuming.

    `nerft eval` writes the report and errors beside the predictions (`nerft.runfolder.EVAL_REPORT`, `ERRORS`)."""
    out_dir = scoring_folder(gold, run, out_dir)
    records = stream_gold(gold)
    evaluator = Evaluator(
        labels or (run.labels if run is not None else None), on_error=on_error, min_confidence=min_confidence
    )
    scored = iter(records)

    def score(row: dict) -> None:
        record = next(scored)
        if row["text"] != record.text:  # the rows come in input order; anything else is a bug
            raise RuntimeError(f"prediction {evaluator.records + 1} is for another sentence than the gold record")
        evaluator.add(record, row["predict"], row_confidences(row))

    counts = predict(
        records, run=run, options=options, out=out_dir / PREDICTIONS, sink=score, input_file=gold, restart=restart
    )
    return ModelEvaluation(evaluator.report(), counts, out_dir)
