"""Opening one of nerft's engines in this process, from `EngineOptions` (`open_engine` in
`nerft.inference.predict` checks the options first; the Ray actors of `nerft.inference.ray_data`
open theirs here)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nerft.inference.chat import NATIVE_TEMPLATES, QWEN_STOP_WORDS
from nerft.inference.engines import Engine
from nerft.inference.engines.hf import HFEngine
from nerft.inference.engines.openai import DEFAULT_CONCURRENCY, OpenAIEngine
from nerft.inference.engines.vllm import VLLMEngine
from nerft.inference.options import EngineOptions
from nerft.inference.source import resolve_model
from nerft.inference.structured import output_constraint

if TYPE_CHECKING:
    from nerft.runfolder import RunInfo


def open_local_engine(options: EngineOptions, run: RunInfo | None) -> Engine:
    """The engine `options` name, in this process (`options.check` passed: `open_engine` checks)."""
    name = options.engine_name
    if name == "openai":
        fmt = options.prompt_format(run)
        template = run.template if run else "qwen"
        return OpenAIEngine(
            options.endpoint,
            model=options.model,
            api_key=options.api_key,
            concurrency=options.concurrency or DEFAULT_CONCURRENCY,
            retries=options.retries,
            timeout=options.timeout,
            backoff=options.backoff,
            stop=QWEN_STOP_WORDS if template in NATIVE_TEMPLATES else (),
            extra_body={"structured_outputs": output_constraint(fmt)} if options.structured else None,
            fmt=fmt,
            grounded=options.grounded,
        )
    source = resolve_model(run)
    grounded = options.grounded is not False
    if name == "hf":
        return HFEngine(
            source,
            run.prompt_format(),
            batch_size=options.batch_size,
            speculation=options.speculation,
            grounded=grounded,
        )
    return VLLMEngine(
        source,
        run.prompt_format(),
        batch_size=options.batch_size,
        structured=True if options.structured is None else options.structured,
        cutoff_len=run.cutoff_len,
        speculation=options.speculation,
        grounded=grounded,
    )


def local_description(options: EngineOptions, run: RunInfo) -> dict:
    """What the hf or vllm engine of `options` reports as its `describe()`, without loading it:
    the Ray driver records it beside its partial file, so a Ray run resumes a single-process one."""
    return {**resolve_model(run).describe(options.engine_name), "grounded": options.grounded is not False}
