"""What `nerft predict --data FILE --out FILE` and `nerft eval --predictions` hold in memory as the file grows.

`predict_file` runs the command's own path (`stream_records` then `predict_records` into a
resumable output) with `CopyEngine`, an engine that answers instantly: each sentence's first two
characters as a name, in the trained format. A model's weights and its bounded read-ahead do not
depend on the input's length; what could grow with it is nerft's reading, resuming and writing,
and that is what the instant engine lets a benchmark push to a million sentences in minutes.
`score_files` runs `nerft eval --gold --predictions --errors --report`'s scoring and writing on
such files.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from nerft.inference.engines import ChatRequest, Generation


class CopyEngine:
    name = "copy"

    def generate(self, requests: Iterable[ChatRequest]) -> Iterator[Generation]:
        for request in requests:
            yield Generation(f"name:{request.text[:2]}", "stop")

    def describe(self) -> dict:
        return {"engine": self.name}

    def close(self) -> None:
        pass


def predict_file(data: str, out: str, prompt: str = "compact") -> dict:
    """Predict every record of `data` into `out`, as `nerft predict` does; the counts."""
    from nerft.data.load import stream_records
    from nerft.inference.predict import predict_records
    from nerft.prompts import get_format

    return predict_records(stream_records(data), CopyEngine(), get_format(prompt), out=out).to_dict()


def score_files(gold: str, predictions: str, errors: str, report: str) -> dict:
    """Score `predictions` against `gold` as `nerft eval --predictions` does: every wrong sentence
    streamed into `errors`, the report JSON into `report`; the micro scores."""
    from nerft.io import jsonl_writer, write_json_atomic
    from nerft.metrics.evaluate import score_prediction_files

    with jsonl_writer(errors) as on_error:
        result = score_prediction_files(gold=gold, predictions=predictions, on_error=on_error)
    data = result.to_dict()
    write_json_atomic(report, data)
    return {"records": data["records"], "micro": data["micro"], "sentences_with_errors": data["sentences_with_errors"]}


def predict_with_run(
    data: str,
    out: str,
    run: str,
    batch_size: int,
    ray: str | None = None,
    actors: int | None = None,
    instant: bool = False,
) -> dict:
    """Predict every record of `data` into `out` with the hf engine of `run`, as `nerft predict
    --data --out` does: in this process, or (`ray`: a cluster's address, or local) through Ray
    Data with `actors` actors of one CPU each, this process being the driver (`instant`: the
    actors answer with `CopyEngine`, to push the driver to a large corpus); the counts."""
    from nerft.data.load import stream_records
    from nerft.inference.options import EngineOptions
    from nerft.inference.predict import predict
    from nerft.inference.ray_data import predict_on_ray
    from nerft.runfolder import load_run

    info = load_run(run)
    options = EngineOptions(engine="hf", batch_size=batch_size, ray=ray, ray_actors=actors if ray else None)
    if ray is None:
        return predict(stream_records(data, info.labels), run=info, options=options, out=out).to_dict()
    predictor = InstantPredictor if instant else None
    return predict_on_ray(data, run=info, options=options, out=out, predictor=predictor).to_dict()


class InstantPredictor:
    """`nerft.inference.ray_data.EnginePredictor` with `CopyEngine` in place of the run's model."""

    def __init__(self, options, run_dir: str, threads, keep_unsupported: bool, min_confidence):
        from nerft.inference.documents import piece_chars
        from nerft.inference.ray_data import EnginePredictor
        from nerft.runfolder import load_run

        self.predictor = EnginePredictor.__new__(EnginePredictor)
        self.predictor.engine, self.predictor.fmt = CopyEngine(), load_run(run_dir).prompt_format()
        self.predictor.keep_unsupported, self.predictor.min_confidence = keep_unsupported, min_confidence
        self.predictor.max_chars = piece_chars(load_run(run_dir))

    def __call__(self, batch):
        return self.predictor(batch)
