"""`diagnose`: the snapshot, the checks and (with a config) the memory estimate, as one result."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from nerft.doctor.checks import (
    FAIL,
    INFO,
    OK,
    WARN,
    Check,
    check_disk,
    environment_checks,
    gpu_summary,
    machine_summary,
    plan_checks,
)
from nerft.doctor.memory import GIB, MemoryEstimate, estimate_training_memory
from nerft.doctor.snapshot import EnvironmentSnapshot, take_snapshot
from nerft.models.download import find_model
from nerft.models.shapes import resolve_model_shape
from nerft.training.plan import RunPlan

MARKS = {OK: "✔", INFO: "ℹ", WARN: "⚠", FAIL: "✘"}


@dataclass
class Diagnosis:
    snapshot: EnvironmentSnapshot
    checks: list[Check]
    plan: RunPlan | None = None
    estimate: MemoryEstimate | None = None
    plan_results: list[Check] = field(default_factory=list)

    @property
    def all_checks(self) -> list[Check]:
        return [*self.checks, *self.plan_results]

    def count(self, status: str) -> int:
        return sum(check.status == status for check in self.all_checks)

    @property
    def ok(self) -> bool:
        """True when nothing fails: the config (if any) can run here."""
        return self.count(FAIL) == 0

    def to_dict(self) -> dict:
        data = {
            "ok": self.ok,
            "passed": self.count(OK),
            "warnings": self.count(WARN),
            "errors": self.count(FAIL),
            "checks": [check.to_dict() for check in self.checks],
            "environment": self.snapshot.to_dict(),
        }
        if self.plan is not None:
            data["config"] = {
                "path": self.plan.source,
                "plan": {
                    **asdict(self.plan.settings),
                    "cutoff_auto": self.plan.cutoff_auto,
                    "sequence_note": self.plan.sequence_note,
                    "nerft_config": self.plan.nerft_config,
                },
                "estimate": None
                if self.estimate is None
                else {
                    "device": self.estimate.device,
                    "params": self.estimate.params,
                    "trainable_params": self.estimate.trainable_params,
                    "bytes": self.estimate.parts,
                    "total_bytes": self.estimate.total,
                },
                "checks": [check.to_dict() for check in self.plan_results],
            }
        return data


def diagnose(*, plan: RunPlan | None = None, snapshot: EnvironmentSnapshot | None = None) -> Diagnosis:
    """Check this machine (or `snapshot`), and whether `plan` can train here."""
    snapshot = snapshot if snapshot is not None else take_snapshot()
    checks = [machine_summary(snapshot), gpu_summary(snapshot), *environment_checks(snapshot)]
    diagnosis = Diagnosis(snapshot=snapshot, checks=checks)
    if plan is None:
        diagnosis.checks += check_disk(snapshot)
        return diagnosis
    diagnosis.plan = plan
    model = plan.settings.model
    shape = resolve_model_shape(model)
    if shape is not None:
        device = "gpu" if plan.requirements.needs_cuda or snapshot.has_cuda_gpu else "cpu"
        diagnosis.estimate = estimate_training_memory(plan.settings, shape, device=device)
    # a hub model is downloaded as bf16 safetensors; leave 5 GiB for checkpoints either way
    model_dir = find_model(model, build=False)
    download = 0 if model_dir is not None or shape is None or model.startswith("nerft:") else shape.params() * 2
    diagnosis.checks += check_disk(snapshot, needed=download + 5 * GIB)
    diagnosis.plan_results = plan_checks(
        plan, snapshot, diagnosis.estimate, model_dir=str(model_dir) if model_dir else None
    )
    return diagnosis


def format_diagnosis(diagnosis: Diagnosis) -> str:
    """The report as text: the environment, then the config's verdict, then the tally."""
    lines = ["Environment"]
    lines += _format_checks(diagnosis.checks)
    plan, estimate = diagnosis.plan, diagnosis.estimate
    if plan is not None:
        settings = plan.settings
        lines += ["", f"Config {plan.source}"]
        lines.append(f"  model           {settings.model}")
        method = settings.finetuning_type
        if settings.finetuning_type == "lora":
            method += f" (rank {settings.lora_rank}, target {settings.lora_target})"
        if settings.quantization_bit:
            method += f", {settings.quantization_bit}-bit base model"
        precision = ", ".join(plan.requirements.mixed_precision) or "float32 (no bf16/fp16)"
        lines.append(f"  method          {method}; {precision}")
        rows = "pack" if settings.packing else "sequence"
        batch_size = settings.per_device_train_batch_size
        batch = f"{batch_size} {rows}{'s' if batch_size > 1 else ''} of {settings.cutoff_len} tokens"
        batch += " (cutoff_len: auto, sized as nerft train sizes it)" if plan.cutoff_auto else " (cutoff_len)"
        lines.append(
            f"  batch           {batch}; gradient checkpointing {'on' if settings.gradient_checkpointing else 'off'}"
        )
        if plan.sequence_note:
            lines.append(f"  sequences       {plan.sequence_note}")
        if estimate is not None:
            shape = estimate.shape
            lines.append(
                f"  model size      {_count(estimate.params)} parameters ({shape.layers} layers, hidden {shape.hidden}); "
                f"trainable {estimate.trainable_params:,}"
            )
            parts = " + ".join(f"{name} {value / GIB:.2f}" for name, value in estimate.parts.items())
            lines.append(f"  estimate ({estimate.device})  {parts} = {estimate.total / GIB:.1f} GiB")
        lines += _format_checks(diagnosis.plan_results)
    lines += ["", f"{diagnosis.count(OK)} passed / {diagnosis.count(WARN)} warnings / {diagnosis.count(FAIL)} errors"]
    if plan is not None:
        lines.append(f"{plan.source}: " + ("can run on this machine" if diagnosis.ok else "cannot run on this machine"))
    return "\n".join(lines)


def _count(number: int) -> str:
    if number >= 10**9:
        return f"{number / 1e9:.2f}B"
    if number >= 10**6:
        return f"{number / 1e6:.1f}M"
    return f"{number:,}"


def _format_checks(checks: list[Check]) -> list[str]:
    lines = []
    for check in checks:
        lines.append(f"  {MARKS[check.status]} {check.name:<13} {check.message}")
        if check.fix:
            lines.append(f"    fix: {check.fix}")
    return lines
