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
from dataclasses import dataclass
from pathlib import Path

from nerft.errors import ConfigError
from nerft.inference.predictions import PredictionCounts
from nerft.runfolder import PREDICTIONS, RunFolder, RunInfo


@dataclass
class ModelEvaluation:
    report: object  # nerft.metrics.evaluate.EvalReport: both CLUE scores, spans, errors
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


def predict_and_score(
    *,
    gold: str | os.PathLike,
    run: RunInfo | None = None,
    engine: str | None = None,
    endpoint: str | None = None,
    prompt: str | None = None,
    labels: list[str] | None = None,
    out_dir: str | os.PathLike | None = None,
    **engine_options,
) -> ModelEvaluation:
    """Predict every gold sentence (resumably, into `out_dir/predictions.jsonl`) and score the answers.

    The prompt format is the run's (`prompt` names one for an endpoint without a run), and so are
    the dataset's labels unless `labels` names them.

    `nerft eval` writes the report and errors beside the predictions (`nerft.runfolder.EVAL_REPORT`, `ERRORS`)."""
    from nerft.inference.predict import predict
    from nerft.metrics.evaluate import evaluate, load_gold

    if out_dir is None:
        if run is None:
            raise ConfigError("--endpoint without --run needs --out-dir (where predictions and the report go)")
        out_dir = RunFolder(run.run_dir).eval_dir(gold)
    out_dir = Path(out_dir)
    records = load_gold(gold)
    answers: list[str] = []  # scoring needs every answer; the rows themselves stream to the file
    keep = lambda row: answers.append(row["predict"])  # noqa: E731
    counts = predict(
        records,
        run=run,
        engine=engine,
        endpoint=endpoint,
        prompt=prompt,
        out=out_dir / PREDICTIONS,
        sink=keep,
        **engine_options,
    )
    report = evaluate(records, answers, labels or (run.labels if run is not None else None))
    return ModelEvaluation(report, counts, out_dir)
