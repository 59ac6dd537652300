"""Scoring a model rather than a file: predict the gold sentences, then score the predictions.

`nerft eval --run RUN --gold FILE` predicts with the run's weights (hf or vllm), `nerft eval
--endpoint URL --gold FILE` through a server; both write into one folder (by default
`<run>/eval/<gold name>/`): `predictions.jsonl` (resumable, like `nerft predict --out`),
`report.json` and `errors.jsonl`.

Two CLUE scores are reported. The evaluator's own scores every entity the answer names. A
predicted entity that is not a substring of its sentence can never be right (every gold entity is
one), so nerft drops such strings by default and also reports the score without them; the gap
between the two is what a model loses by inventing or rewriting names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nerft.errors import ConfigError
from nerft.inference.predictions import PredictionCounts
from nerft.runfolder import RunInfo

PREDICTIONS = "predictions.jsonl"
REPORT = "report.json"
ERRORS = "errors.jsonl"


@dataclass
class ModelEvaluation:
    report: object  # nerft.metrics.evaluate.EvalReport: every entity the answers name
    in_text: object  # ClueScores over the entities found in their sentence
    dropped: int
    counts: PredictionCounts
    out_dir: Path

    def to_dict(self) -> dict:
        micro = self.in_text.micro
        return {
            **self.report.to_dict(),
            "clue_in_text": {
                "dropped_not_in_text": self.dropped,
                "micro": {"precision": micro.precision, "recall": micro.recall, "f1": micro.f1, "support": micro.support},
                "macro": {"precision": self.in_text.macro_precision, "recall": self.in_text.macro_recall, "f1": self.in_text.macro_f1},
            },
            "prediction": self.counts.to_dict(),
        }

    def format(self) -> str:
        micro = self.in_text.micro
        return "\n".join([
            self.counts.summary(self.out_dir / PREDICTIONS),
            "",
            self.report.format(),
            f"CLUE micro F1 without the {self.dropped} predicted string(s) not in their sentence: {micro.f1:.4f} "
            f"(precision {micro.precision:.4f}, recall {micro.recall:.4f})",
            f"predictions, report.json and errors.jsonl in {self.out_dir}",
        ])


def predict_and_score(
    *,
    gold: str | os.PathLike,
    run: RunInfo | None = None,
    engine: str | None = None,
    endpoint: str | None = None,
    prompt: str | None = None,
    out_dir: str | os.PathLike | None = None,
    **engine_options,
) -> ModelEvaluation:
    """Predict every gold sentence (resumably) and score the answers; write the three files."""
    from nerft.inference.predict import predict
    from nerft.io import write_json_atomic, write_jsonl_atomic
    from nerft.metrics.clue import score_clue
    from nerft.metrics.evaluate import evaluate, load_gold

    if out_dir is None:
        if run is None:
            raise ConfigError("--endpoint without --run needs --out-dir (where predictions and the report go)")
        out_dir = Path(run.run_dir) / "eval" / Path(gold).stem
    out_dir = Path(out_dir)
    records = load_gold(gold)
    rows: list[dict] = []
    counts = predict(records, run=run, engine=engine, endpoint=endpoint, prompt=prompt, out=out_dir / PREDICTIONS, sink=rows.append, **engine_options)
    report = evaluate(records, [row["predict"] for row in rows])
    in_text = score_clue(
        [record.mentions() for record in records],
        [[(label, text) for label, text in (mentions or []) if text in record.text] for record, mentions in zip(records, report.parsed)],
    )
    dropped = sum(1 for record, mentions in zip(records, report.parsed) for _, text in dict.fromkeys(mentions or []) if text not in record.text)
    evaluation = ModelEvaluation(report, in_text, dropped, counts, out_dir)
    write_json_atomic(out_dir / REPORT, evaluation.to_dict())
    write_jsonl_atomic(out_dir / ERRORS, report.errors())
    return evaluation
