"""`nerft export`: merge a run's LoRA adapter into its base model with `llamafactory-cli export`.

A full (or freeze) fine-tune has no adapter: the run folder already holds the whole model, and
export writes it out the same way (sharded safetensors, the tokenizer and chat template, the
dtype LLaMA-Factory chooses for inference), so every run exports to a standalone model folder.

The base model, template and adapter come from the run folder's `run.json`, so the merged model is
the one that was trained. LLaMA-Factory writes into a unique `.partial` folder beside `--out`, swapped
into place only after it succeeded: `--out` is never left half-written. The merged folder holds
the weights, the tokenizer and its chat template, and loads with transformers alone.

A QLoRA run is merged into the unquantized base model: LLaMA-Factory cannot merge into 4-bit
weights, and a merged bf16 model is what vLLM and transformers serve.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from nerft import __version__, process
from nerft.config.llamafactory_args import INSTALL_HINT
from nerft.config.render import to_llamafactory_yaml
from nerft.errors import ModelError
from nerft.io import refuse_collisions, replace_dir, staging_dir, write_text_atomic
from nerft.runfolder import RunInfo, load_run, update_run
from nerft.training.launch import export_command

LLAMAFACTORY_EXPORT = "llamafactory_export.yaml"
EXPORT_SHARD_GB = 5


def export_args(info: RunInfo, export_dir: Path, *, device: str = "cpu") -> dict:
    """The arguments of `llamafactory-cli export`: base + adapter for LoRA, else the run's own model."""
    lora = info.finetuning_type == "lora"
    return {
        "model_name_or_path": str(info.base_model if lora else info.run_dir),
        **({"adapter_name_or_path": str(info.adapter_dir)} if lora else {}),
        "template": info.template,
        "finetuning_type": info.finetuning_type,
        "trust_remote_code": True,
        "export_dir": str(export_dir),
        "export_size": EXPORT_SHARD_GB,
        "export_device": device,
        "export_legacy_format": False,
    }


def check_exportable(info: RunInfo) -> None:
    if info.finetuning_type != "lora":
        if not (Path(info.run_dir) / "config.json").is_file():
            raise ModelError(
                f"{info.run_dir}: a {info.finetuning_type} fine-tune, but no config.json in the run folder (did the training finish?)"
            )
        return
    if info.adapter_dir is None or not (Path(info.adapter_dir) / "adapter_config.json").is_file():
        raise ModelError(f"{info.run_dir}: no adapter_config.json in {info.adapter_dir} (did the training finish?)")
    if not (Path(info.base_model) / "config.json").is_file():
        raise ModelError(
            f"{info.run_dir}/run.json: base model {info.base_model} is not on disk",
            hint="download it again (`nerft download`) or edit base_model in run.json",
        )


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    force: bool = False,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> tuple[int, Path]:
    """Merge the run's adapter into `out`; return (llamafactory-cli's exit code, the merged folder)."""

    info = load_run(Path(run_dir).resolve())
    check_exportable(info)
    out = Path(out).expanduser().resolve()
    if out == Path(info.run_dir).resolve():
        raise ModelError("--out cannot be the run folder itself")
    base_model = Path(info.base_model).expanduser()
    refuse_collisions(  # --out is replaced whole: nothing the merge reads may be in it
        {
            "RUN_DIR": info.run_dir,
            "the adapter": info.adapter_dir,
            "the base model": base_model if base_model.exists() else None,
        },
        {},
        replaced_folders={"--out": out},
    )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise ModelError(f"{out} already exists", hint="--force replaces it, or choose another --out")
        if not (out / "config.json").is_file():
            raise ModelError(
                f"{out} is not a model folder (no config.json): nerft will not replace it; remove it yourself"
            )

    staging = staging_dir(out)  # unique: two exports to one --out must not share it
    args = export_args(info, staging, device=device)
    export_yaml = Path(info.run_dir) / LLAMAFACTORY_EXPORT
    header = f"Rendered by nerft {__version__}: export_dir is renamed to {out} once the export succeeded."
    write_text_atomic(export_yaml, to_llamafactory_yaml({"export": args}, header=header))

    code = process.run_program(export_command(export_yaml), install_hint=INSTALL_HINT, stdout_to_stderr=True)
    if code != 0:
        shutil.rmtree(staging, ignore_errors=True)
        return code, out
    missing = [name for name in ("config.json", "tokenizer_config.json") if not (staging / name).is_file()]
    if missing:
        raise ModelError(f"llamafactory-cli export left no {', '.join(missing)} in {staging}")
    replace_dir(staging, out)
    adapter_dir = _as_stored(info.adapter_dir, Path(info.run_dir)) if info.adapter_dir is not None else None
    update_run(info.run_dir, merged_model=out, adapter_dir=adapter_dir)
    log(f"{'merged model' if info.finetuning_type == 'lora' else 'model       '} {out} (run.json merged_model updated)")
    return 0, out


def _as_stored(adapter_dir: Path, run_dir: Path) -> Path:
    """The adapter folder as run.json keeps it: relative when inside the run folder (movable)."""
    try:
        return Path(adapter_dir).resolve().relative_to(run_dir.resolve())
    except ValueError:
        return Path(adapter_dir)
