"""Predicting over records: open an engine for a run or an endpoint, answer every record in order.

from nerft.inference.predict import open_engine, predict_records
engine = open_engine("hf", run=load_run("runs/tiny"))
counts = predict_records(records, engine, fmt, out="runs/tiny/eval/predictions.jsonl")
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized

from nerft.data.records import CluenerRecord
from nerft.errors import ConfigError, DataError, ServerError
from nerft.inference.chat import NATIVE_TEMPLATES, QWEN_STOP_WORDS
from nerft.inference.engines import ENGINES, ChatRequest, Engine
from nerft.inference.predictions import PredictionCounts, ResumablePredictions, prediction_row
from nerft.inference.structured import output_constraint
from nerft.progress import progress
from nerft.prompts import PromptFormat
from nerft.runfolder import RunInfo


def open_engine(
    name: str,
    *,
    run: RunInfo | None = None,
    fmt: PromptFormat | None = None,
    endpoint: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    batch_size: int | None = None,
    concurrency: int | None = None,
    structured: bool | None = None,
    speculation: bool | None = None,
    retries: int = 4,
    timeout: float = 120.0,
    backoff: float = 0.5,
    ray: str | None = None,
    ray_actors: int | None = None,
    ray_cpus: float | None = None,
) -> Engine:
    """An engine for a run folder (`hf`, `vllm`) or an OpenAI-compatible endpoint (`openai`).

    `structured` defaults to on for vllm and off for openai (where it is vLLM's `structured_outputs`
    request field, which other servers ignore or refuse). `speculation` is prompt-lookup decoding
    (hf, vllm; None: on with batch size 1, where it is faster, see docs/PERFORMANCE.md).
    `ray` (a cluster's address, `auto`, `local`, or `default`: Ray's own choice) runs the engine in
    Ray actors (`nerft.inference.engines.ray_actors`).
    """
    if ray is not None:
        if name == "openai" or endpoint:
            raise ConfigError("--ray runs the hf or vllm engine on a cluster; an endpoint has its own --concurrency")
        if run is None:
            raise ConfigError("--ray needs --run RUN_DIR (the model every actor loads)")
        from nerft.inference.engines.ray_actors import RayEngine

        options = {"batch_size": batch_size, "structured": structured, "speculation": speculation}
        return RayEngine(name, str(run.run_dir), address=ray, actors=ray_actors, cpus_per_actor=ray_cpus, **options)
    if ray_actors is not None or ray_cpus is not None:
        raise ConfigError("--ray-actors and --ray-cpus are for --ray")
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r} (choose from: {', '.join(ENGINES)})")
    fmt = fmt or (run.prompt_format() if run else None)
    if name == "openai":
        if not endpoint:
            raise ConfigError("--engine openai needs --endpoint URL (a server started with `nerft serve`)")
        from nerft.inference.engines.openai import DEFAULT_CONCURRENCY, OpenAIEngine

        template = run.template if run else "qwen"
        extra_body = {"structured_outputs": output_constraint(fmt)} if structured and fmt else None
        return OpenAIEngine(
            endpoint,
            model=model,
            api_key=api_key,
            concurrency=concurrency or DEFAULT_CONCURRENCY,
            retries=retries,
            timeout=timeout,
            backoff=backoff,
            stop=QWEN_STOP_WORDS if template in NATIVE_TEMPLATES else (),
            extra_body=extra_body,
        )
    if run is None:
        raise ConfigError(f"--engine {name} needs --run RUN_DIR (the model to load)")
    if endpoint:
        raise ConfigError(f"--endpoint is for --engine openai, not {name}")
    from nerft.inference.source import resolve_model

    source = resolve_model(run)
    if name == "hf":
        from nerft.inference.engines.hf import HFEngine

        if speculation and (batch_size or 0) != 1:
            raise ConfigError(
                "--speculation with --engine hf needs --batch-size 1: transformers runs prompt lookup one sentence at a time"
            )
        return HFEngine(source, batch_size=batch_size, speculation=speculation)
    from nerft.inference.engines.vllm import VLLMEngine

    return VLLMEngine(
        source,
        fmt,
        batch_size=batch_size,
        structured=True if structured is None else structured,
        cutoff_len=run.cutoff_len,
        speculation=speculation,
    )


def predict_records(
    records: Iterable[CluenerRecord],
    engine: Engine,
    fmt: PromptFormat,
    *,
    out: str | os.PathLike | None = None,
    sink: Callable[[dict], None] | None = None,
    keep_unsupported: bool = False,
) -> PredictionCounts:
    """Answer every record, in order, into `out` (resumable) and/or `sink` (called per row).

    Records are read as the engine asks for them and each row is written as soon as it is known,
    so `records` may be a stream of any length (`nerft.data.load.stream_records`)."""
    total = len(records) if isinstance(records, Sized) else None
    counts = PredictionCounts(engine=engine.describe())
    store = ResumablePredictions(out, engine.describe()) if out is not None else None
    remaining = iter(records)
    for row in store.resume(remaining) if store else ():
        counts.add(row)
        counts.resumed += 1
        if sink:
            sink(row)
    pending: deque[CluenerRecord] = deque()  # asked of the engine, not answered yet (its read-ahead)

    def requests() -> Iterator[ChatRequest]:
        for record in remaining:
            pending.append(record)
            yield ChatRequest.for_text(fmt, record.text)

    start = time.perf_counter()
    done = 0
    try:
        todo = None if total is None else total - counts.resumed
        for generation in progress(engine.generate(requests()), total=todo, desc="predicting"):
            if not pending:  # an engine bug; never rename an incomplete file into place
                raise RuntimeError(f"the {engine.name} engine answered more requests than it was given")
            row = prediction_row(pending.popleft(), generation, keep_unsupported=keep_unsupported)
            if store:
                store.append(row)
            if sink:
                sink(row)
            counts.add(row)
            done += 1
        if pending:
            raise RuntimeError(f"the {engine.name} engine answered {done} of {done + len(pending)} requests")
        if next(remaining, None) is not None:
            raise RuntimeError(f"the {engine.name} engine stopped asking for requests after {done}")
        if store:
            store.finish()
    except ServerError as exc:
        if store is None:
            raise
        have = counts.resumed + done
        of, others = (f" of {total}", f"the other {total - have}") if total is not None else ("", "the others")
        raise ServerError(
            f"{exc.message}; {have}{of} predictions kept in {store.partial}",
            hint="; ".join(filter(None, [exc.hint, f"run the same command again to predict {others}"])),
        ) from None
    finally:
        if store:
            store.close()
        counts.records = counts.resumed + done
        counts.seconds = time.perf_counter() - start
    return counts


def predict(
    records: Iterable[CluenerRecord],
    *,
    run: RunInfo | None = None,
    engine: str | None = None,
    endpoint: str | None = None,
    prompt: str | None = None,
    out: str | os.PathLike | None = None,
    sink: Callable[[dict], None] | None = None,
    keep_unsupported: bool = False,
    **engine_options,
) -> PredictionCounts:
    """Open the engine (default: `default_engine`), answer `records`, close the engine.

    The prompt format is the run's; `prompt` names one only for an endpoint without a run folder.
    """
    from nerft.inference.engines import default_engine
    from nerft.prompts import get_format

    if run is not None and prompt is not None and prompt != run.prompt:
        raise ConfigError(
            f"--prompt {prompt} differs from the run's prompt format ({run.prompt}); inference must use training's"
        )
    fmt = run.prompt_format() if run is not None else get_format(prompt or "compact")
    sentences = len(records) if isinstance(records, Sized) else None
    name = engine or default_engine(endpoint=endpoint, run=run, sentences=sentences)
    opened = open_engine(name, run=run, fmt=fmt, endpoint=endpoint, **engine_options)
    try:
        return predict_records(records, opened, fmt, out=out, sink=sink, keep_unsupported=keep_unsupported)
    finally:
        opened.close()


def records_from_lines(
    lines: Iterable[str], *, source: str = "<stdin>", labels: Sequence[str] | None = None
) -> Iterator[CluenerRecord]:
    """Records typed or piped in: one sentence a line, or one CLUE NER JSON object a line.

    Read as they are predicted, so a pipe of any length streams: the first record is read here
    (none at all is a `DataError` before any model is loaded), a bad later line raises its
    `DataError` when it is reached."""
    from nerft.data.load import format_errors
    from nerft.data.validate import CheckedRecord, check_json_record

    def checked_lines() -> Iterator[CheckedRecord]:
        for lineno, line in enumerate(lines, start=1):
            stripped = line.strip()
            if not stripped:
                continue
            if not stripped.startswith("{"):
                yield CheckedRecord(CluenerRecord(text=stripped, labelled=False, source=source, line=lineno))
                continue
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise DataError(f"{source}:{lineno}: broken JSON ({exc.msg})") from None
            yield check_json_record(value, source, lineno, labels)

    def valid() -> Iterator[CluenerRecord]:
        for checked in checked_lines():
            if checked.errors:
                raise DataError(format_errors(checked.errors))
            if checked.ok:
                yield checked.record

    records = valid()
    first = next(records, None)
    if first is None:
        raise DataError(f"{source}: no sentence to predict")
    return itertools.chain([first], records)
