"""The doctor's checks against simulated machines: each known trap and its exact fix."""

from __future__ import annotations

from dataclasses import replace

import pytest

from nerft.doctor.checks import (
    FAIL,
    INFO,
    OK,
    WARN,
    check_disk,
    check_python,
    check_tested_versions,
    check_torch_companions,
    check_torch_cuda,
    check_vllm,
    plan_checks,
)
from nerft.doctor.compat import TESTED_WITH, choose_torch_build, companions
from nerft.doctor.diagnosis import diagnose, format_diagnosis
from nerft.doctor.snapshot import CacheDir, EnvironmentSnapshot
from nerft.machine import GpuInfo, parse_gpu_query, parse_nvidia_smi_header
from nerft.training.plan import RunPlan
from nerft.training.settings import TrainingSettings

GOOD_PACKAGES = {
    "llamafactory": "0.9.5",
    "torch": "2.11.0",
    "torchvision": "0.26.0",
    "torchaudio": "2.11.0",
    "transformers": "5.6.0",
    "datasets": "4.0.0",
    "accelerate": "1.11.0",
    "peft": "0.18.1",
    "trl": "0.24.0",
    "modelscope": "1.40.2",
    "vllm": None,
    "flash-attn": None,
    "liger-kernel": None,
    "bitsandbytes": None,
    "deepspeed": None,
}
H100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", 81559, 80000, "9.0")
RTX4090 = GpuInfo(0, "NVIDIA GeForce RTX 4090", 24564, 24000, "8.9")
T4 = GpuInfo(0, "Tesla T4", 15360, 15000, "7.5")


def machine(**changes) -> EnvironmentSnapshot:
    """A healthy GPU machine (torch cu130 on a CUDA 13.0 driver, one H100), with `changes`."""
    base = EnvironmentSnapshot(
        python_version="3.11.7",
        python_executable="/venv/bin/python",
        platform="Linux",
        cpu_count=16,
        ram_total_bytes=128 * 2**30,
        ram_available_bytes=120 * 2**30,
        torch_version="2.11.0+cu130",
        torch_cuda_build="13.0",
        torch_cuda_available=True,
        driver_version="580.82.07",
        driver_cuda="13.0",
        gpus=[H100],
        packages=dict(GOOD_PACKAGES),
        torch_pins={"torchvision": "==2.11.0"},
        modules={"flash_attn": False, "liger_kernel": False, "bitsandbytes": False},
        cache_dirs=[CacheDir("Hugging Face cache", "/root/.cache/huggingface/hub", 500 * 2**30)],
    )
    return replace(base, **changes)


def cpu_machine(**changes) -> EnvironmentSnapshot:
    """This sandbox: torch cu130 from PyPI, no driver, no GPU."""
    return machine(
        torch_cuda_available=False,
        driver_version=None,
        driver_cuda=None,
        driver_error="nvidia-smi not found",
        gpus=[],
        **changes,
    )


def by_name(checks, name):
    found = [check for check in checks if check.name == name]
    assert found, f"no {name} check in {checks}"
    return found[0]


# --- torch's CUDA build against the driver ------------------------------------------------------


def test_cu130_torch_on_a_cuda_12_2_driver_fails_with_the_exact_pip_fix():
    # What `pip install llamafactory` gives on the tutorials' CUDA 12.2 machines: torch cannot see the GPU.
    snapshot = machine(driver_version="535.104.05", driver_cuda="12.2", torch_cuda_available=False)
    check = check_torch_cuda(snapshot)
    assert check.status == FAIL
    assert "needs a CUDA 13.0 driver" in check.message and "supports CUDA 12.2" in check.message
    # torch 2.11 ships cu126, cu128 and cu130: none <= 12.2, so the oldest of the same major (12.6) runs
    # through minor-version compatibility and keeps nerft's torch pin.
    assert check.fix.startswith(
        "pip install torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0 --index-url https://download.pytorch.org/whl/cu126"
    )
    assert "minor-version compatibility" in check.fix
    assert check.fix.endswith("or update the NVIDIA driver to 580.65.06 or newer")


def test_cu130_torch_on_a_cuda_12_8_driver_gets_the_cu128_build():
    check = check_torch_cuda(machine(driver_version="570.86.10", driver_cuda="12.8", torch_cuda_available=False))
    assert check.status == FAIL
    assert check.fix.startswith(
        "pip install torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0 --index-url https://download.pytorch.org/whl/cu128;"
    )
    assert "minor-version" not in check.fix


def test_a_cuda_11_8_driver_is_offered_the_newest_torch_that_still_has_a_cu118_build():
    choice = choose_torch_build("2.11.0+cu130", "11.8")
    assert (choice.torch, choice.cuda, choice.via_minor_compatibility) == ("2.7.1", "11.8", False)
    assert choice.pip_command() == (
        "pip install torch==2.7.1 torchvision==0.22.1 torchaudio==2.7.1 --index-url https://download.pytorch.org/whl/cu118"
    )


def test_no_known_build_runs_on_a_cuda_10_driver():
    assert choose_torch_build("2.11.0", "10.2") is None
    check = check_torch_cuda(machine(driver_cuda="10.2", torch_cuda_available=False))
    assert check.status == FAIL and check.fix == "or update the NVIDIA driver to 580.65.06 or newer"


def test_matching_build_and_driver_pass():
    assert check_torch_cuda(machine()).status == OK
    assert (
        check_torch_cuda(machine(torch_version="2.11.0+cu126", torch_cuda_build="12.6", driver_cuda="12.8")).status
        == OK
    )


def test_a_newer_minor_build_passes_when_torch_sees_the_gpu_and_fails_when_it_does_not():
    snapshot = machine(torch_version="2.11.0+cu126", torch_cuda_build="12.6", driver_cuda="12.2")
    assert check_torch_cuda(snapshot).status == OK
    assert "minor-version compatibility" in check_torch_cuda(snapshot).message
    broken = check_torch_cuda(replace(snapshot, torch_cuda_available=False))
    assert broken.status == FAIL and "torch.cuda.is_available() is False" in broken.message


def test_a_cpu_torch_on_a_gpu_machine_fails():
    check = check_torch_cuda(
        machine(torch_version="2.11.0+cpu", torch_cuda_build=None, torch_cuda_available=False, driver_cuda="12.4")
    )
    assert check.status == FAIL and "CPU build" in check.message
    assert check.fix.startswith(
        "pip install torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0 --index-url https://download.pytorch.org/whl/cu126"
    )


def test_no_driver_is_information_not_failure():
    check = check_torch_cuda(cpu_machine())
    assert check.status == INFO and "training runs on the CPU" in check.message


def test_torch_that_does_not_import_fails():
    check = check_torch_cuda(
        cpu_machine(torch_version=None, torch_cuda_build=None, torch_error="OSError: libcudnn.so.9: cannot open")
    )
    assert check.status == FAIL and "libcudnn.so.9" in check.message
    assert (
        check.fix
        == "pip install torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0 --index-url https://download.pytorch.org/whl/cpu"
    )


# --- torchvision / torchaudio ---------------------------------------------------------------------


def test_torchvision_built_for_another_torch_fails():
    snapshot = machine(packages={**GOOD_PACKAGES, "torchvision": "0.25.0"}, torch_pins={"torchvision": "==2.10.0"})
    vision = by_name(check_torch_companions(snapshot), "torchvision")
    assert vision.status == FAIL and "built for torch==2.10.0" in vision.message
    assert (
        vision.fix
        == "pip install torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0 --index-url https://download.pytorch.org/whl/cu130"
    )


def test_torchaudio_from_another_release_fails_by_the_known_pairs_table():
    snapshot = machine(packages={**GOOD_PACKAGES, "torchaudio": "2.10.0"})
    audio = by_name(check_torch_companions(snapshot), "torchaudio")
    assert audio.status == FAIL and "torch 2.11.0 goes with torchaudio 2.11.0" in audio.message
    assert by_name(check_torch_companions(snapshot), "torchvision").status == OK


def test_companion_with_another_cuda_build_fails():
    snapshot = machine(packages={**GOOD_PACKAGES, "torchvision": "0.26.0+cu126"})
    vision = by_name(check_torch_companions(snapshot), "torchvision")
    assert vision.status == FAIL and "its build is cu126, torch's is cu130" in vision.message


def test_companion_that_does_not_import_fails():
    snapshot = machine(import_errors={"torchvision": "RuntimeError: operator torchvision::nms does not exist"})
    vision = by_name(check_torch_companions(snapshot), "torchvision")
    assert vision.status == FAIL and "torchvision::nms" in vision.message


def test_missing_companion_fails():
    audio = by_name(check_torch_companions(machine(packages={**GOOD_PACKAGES, "torchaudio": None})), "torchaudio")
    assert audio.status == FAIL and "not installed" in audio.message


@pytest.mark.parametrize(
    "torch, expected",
    [
        ("2.11.0", ("0.26.0", "2.11.0")),
        ("2.7.1+cu118", ("0.22.1", "2.7.1")),
        ("2.12.0", ("0.27.0", "2.12.0")),
        ("1.13.1", None),
    ],
)
def test_known_pairs_and_the_pattern_for_newer_releases(torch, expected):
    assert companions(torch) == expected


# --- versions LLaMA-Factory accepts -------------------------------------------------------------


@pytest.mark.parametrize("version", ["4.52.0", "4.57.0", "5.7.0", "4.54.1"])
def test_transformers_outside_llamafactorys_range_fails_with_the_pip_fix(version):
    check = by_name(check_tested_versions(machine(packages={**GOOD_PACKAGES, "transformers": version})), "transformers")
    assert check.status == FAIL
    assert check.fix == 'pip install "transformers>=4.55.0,<=5.6.0,!=4.52.0,!=4.57.0"'


def test_peft_newer_than_llamafactorys_wheel_allows_fails():
    check = by_name(check_tested_versions(machine(packages={**GOOD_PACKAGES, "peft": "0.19.0"})), "peft")
    assert check.status == FAIL and check.fix == 'pip install "peft>=0.18.0,<=0.18.1"'


def test_missing_required_package_fails_and_other_torch_only_warns():
    checks = check_tested_versions(machine(packages={**GOOD_PACKAGES, "trl": None, "torch": "2.10.0"}))
    assert by_name(checks, "trl").status == FAIL
    torch = by_name(checks, "torch")
    assert torch.status == WARN
    assert (
        torch.fix
        == "pip install torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0 --index-url https://download.pytorch.org/whl/cu130"
    )


def test_the_tested_ranges_match_the_installed_llamafactory():
    """If LLaMA-Factory is upgraded, its Requires-Dist changes and this table must follow."""
    import importlib.metadata

    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    required = {
        Requirement(line).name: Requirement(line).specifier for line in importlib.metadata.requires("llamafactory")
    }
    for name in ("transformers", "datasets", "accelerate", "peft", "trl"):
        assert SpecifierSet(TESTED_WITH[name]) == required[name], name
    assert importlib.metadata.version("llamafactory") == TESTED_WITH["llamafactory"][2:]


def test_vllm_outside_llamafactorys_range_fails():
    check = check_vllm(machine(packages={**GOOD_PACKAGES, "vllm": "0.12.0"}, torch_pins={}))
    assert check.status == FAIL and ">=0.4.3,<=0.11.0" in check.message
    assert check.fix.startswith('pip install "vllm>=0.4.3,<=0.11.0"')


def test_vllm_built_for_another_torch_fails_even_inside_the_range():
    check = check_vllm(machine(packages={**GOOD_PACKAGES, "vllm": "0.11.0"}, torch_pins={"vllm": "==2.8.0"}))
    assert check.status == FAIL and "built for torch==2.8.0 but torch 2.11.0" in check.message


def test_vllm_in_range_with_its_torch_passes_and_absent_vllm_is_information():
    snapshot = machine(
        torch_version="2.8.0+cu128",
        torch_cuda_build="12.8",
        packages={**GOOD_PACKAGES, "vllm": "0.10.2"},
        torch_pins={"vllm": "==2.8.0"},
    )
    assert check_vllm(snapshot).status == OK
    assert check_vllm(machine()).status == INFO


def test_old_python_fails():
    assert check_python(machine(python_version="3.9.18")).status == FAIL
    assert check_python(machine()).status == OK


def test_low_disk_warns():
    snapshot = machine(cache_dirs=[CacheDir("ModelScope cache", "/m", 3 * 2**30)])
    (check,) = check_disk(snapshot, needed=20 * 2**30)
    assert check.status == WARN and "3.0 GiB free" in check.message


# --- a training config against the machine ---------------------------------------------------------


def training_plan(*, source: str = "", **settings) -> RunPlan:
    """The plan of a plain LLaMA-Factory file with these settings."""
    return RunPlan(TrainingSettings(**settings), source=source)


QWEN7B = dict(
    model="Qwen/Qwen2.5-7B-Instruct",
    bf16=True,
    cutoff_len=1024,
    per_device_train_batch_size=1,
    source="conf/qwen7b.yaml",
)


def test_bf16_without_cuda_fails_and_names_the_missing_gpu():
    checks = plan_checks(training_plan(**QWEN7B), cpu_machine(), None)
    precision = by_name(checks, "precision")
    assert precision.status == FAIL
    assert "this machine has no NVIDIA GPU (nvidia-smi not found)" in precision.message
    assert precision.fix.startswith("set bf16: false in conf/qwen7b.yaml")


def test_bf16_on_a_t4_fails_and_suggests_fp16():
    precision = by_name(plan_checks(training_plan(**QWEN7B), machine(gpus=[T4]), None), "precision")
    assert precision.status == FAIL and "Tesla T4 (compute capability 7.5) has no bf16" in precision.message
    assert precision.fix == "set bf16: false and fp16: true in conf/qwen7b.yaml"


def test_qlora_needs_bitsandbytes():
    plan = training_plan(**{**QWEN7B, "quantization_bit": 4})
    quantization = [check for check in plan_checks(plan, machine(), None) if check.name == "quantization"]
    assert [check.status for check in quantization] == [FAIL]
    assert quantization[0].fix == "pip install bitsandbytes"
    installed = machine(packages={**GOOD_PACKAGES, "bitsandbytes": "0.45.0"}, modules={"bitsandbytes": True})
    assert by_name(plan_checks(plan, installed, None), "quantization").status == OK


def test_liger_requested_but_missing_fails_and_fa2_missing_warns():
    plan = training_plan(**{**QWEN7B, "enable_liger_kernel": True, "flash_attn": "fa2"})
    checks = plan_checks(plan, machine(), None)
    assert by_name(checks, "liger-kernel").status == FAIL
    assert by_name(checks, "flash-attn").status == WARN
    # from a nerft config, `nerft train` stops on a missing fa2 (kernels.check_packages): so does the doctor
    checks = plan_checks(replace(plan, nerft_config=True), machine(), None)
    assert by_name(checks, "flash-attn").status == FAIL and "falls back" not in by_name(checks, "flash-attn").message


def test_deepspeed_requested_but_missing_fails():
    plan = training_plan(**{**QWEN7B, "deepspeed": "zero2"})
    check = by_name(plan_checks(plan, machine(), None), "deepspeed")
    assert check.status == FAIL and check.fix.startswith("pip install deepspeed")
    with_deepspeed = machine(
        modules={"flash_attn": False, "liger_kernel": False, "bitsandbytes": False, "deepspeed": True}
    )
    assert "deepspeed" not in [check.name for check in plan_checks(plan, with_deepspeed, None)]


def test_diagnose_7b_lora_fits_an_h100_and_a_4090_but_not_a_t4():
    plan = training_plan(**QWEN7B)  # estimate 19.7 GiB: see test_doctor_memory
    assert diagnose(plan=plan, snapshot=machine()).ok
    assert diagnose(plan=plan, snapshot=machine(gpus=[RTX4090])).ok
    on_t4 = diagnose(
        plan=replace(plan, settings=replace(plan.settings, bf16=False, fp16=True)), snapshot=machine(gpus=[T4])
    )
    assert not on_t4.ok
    memory = by_name(on_t4.plan_results, "memory")
    assert "needs about 19.7 GiB per GPU; the largest GPU here, Tesla T4, has 15.0 GiB" in memory.message
    assert "4-bit QLoRA" in memory.fix


def test_diagnose_qlora_fits_a_t4():
    plan = training_plan(**{**QWEN7B, "bf16": False, "fp16": True, "quantization_bit": 4})
    snapshot = machine(gpus=[T4], packages={**GOOD_PACKAGES, "bitsandbytes": "0.45.0"}, modules={"bitsandbytes": True})
    diagnosis = diagnose(plan=plan, snapshot=snapshot)
    assert diagnosis.ok, format_diagnosis(diagnosis)


def test_diagnose_7b_on_this_cpu_machine_fails_naming_the_missing_gpu():
    diagnosis = diagnose(plan=training_plan(**QWEN7B), snapshot=cpu_machine())
    assert not diagnosis.ok
    memory = by_name(diagnosis.plan_results, "memory")
    assert memory.status == FAIL
    assert (
        memory.message
        == "needs an NVIDIA GPU with at least 19.7 GiB; this machine has no NVIDIA GPU (nvidia-smi not found)"
    )
    text = format_diagnosis(diagnosis)
    assert text.endswith("conf/qwen7b.yaml: cannot run on this machine")
    assert "2 errors" in text


def test_diagnose_tiny_cpu_preset_passes_on_the_cpu():
    plan = training_plan(
        model="nerft:tiny-qwen2", cutoff_len=512, per_device_train_batch_size=4, source="conf/tiny-cpu.yaml"
    )
    diagnosis = diagnose(plan=plan, snapshot=cpu_machine())
    assert diagnosis.ok, format_diagnosis(diagnosis)
    assert diagnosis.estimate.device == "cpu"
    assert by_name(diagnosis.plan_results, "memory").message.startswith("runs on the CPU: needs about 1.")


def test_a_gpu_torch_cannot_use_is_named_in_the_memory_verdict():
    snapshot = machine(driver_version="535.104.05", driver_cuda="12.2", torch_cuda_available=False)
    memory = by_name(diagnose(plan=training_plan(**QWEN7B), snapshot=snapshot).plan_results, "memory")
    assert memory.status == FAIL
    assert memory.message.startswith("needs about 19.7 GiB; NVIDIA H100 80GB HBM3 has 79.6 GiB and would fit it, but ")
    assert "torch 2.11.0+cu130 cannot use the GPU (torch CUDA build 13.0, driver CUDA 12.2" in memory.message
    assert memory.fix == "make torch see the GPU first: the fix of the cuda check above"


def test_the_model_check_says_whether_the_base_model_is_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("NERFT_CACHE", str(tmp_path))
    model = by_name(diagnose(plan=training_plan(**QWEN7B), snapshot=machine()).plan_results, "model")
    assert model.status == WARN
    assert model.message == "Qwen/Qwen2.5-7B-Instruct is not downloaded yet (about 14.2 GiB in bf16)"
    assert model.fix == "nerft download Qwen/Qwen2.5-7B-Instruct"
    tiny = by_name(diagnose(plan=training_plan(model="nerft:tiny-qwen2"), snapshot=cpu_machine()).plan_results, "model")
    assert tiny.status == OK


def test_an_unknown_model_warns_but_does_not_fail():
    diagnosis = diagnose(plan=training_plan(model="someone/unknown-model", source="x.yaml"), snapshot=machine())
    assert by_name(diagnosis.plan_results, "memory").status == WARN
    assert diagnosis.ok


# --- parsing nvidia-smi -----------------------------------------------------------------------------

NVIDIA_SMI = """\
Mon Jun  2 10:00:00 2025
+---------------------------------------------------------------------------------------+
| NVIDIA-SMI 535.104.05             Driver Version: 535.104.05   CUDA Version: 12.2     |
|-----------------------------------------+----------------------+----------------------+
"""


def test_nvidia_smi_header_gives_driver_and_cuda_versions():
    assert parse_nvidia_smi_header(NVIDIA_SMI) == ("535.104.05", "12.2")
    assert parse_nvidia_smi_header("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.") == (
        None,
        None,
    )


def test_gpu_query_rows_are_parsed_with_and_without_compute_capability():
    rows = "0, NVIDIA A100-SXM4-80GB, 81920, 81000, 8.0\n1, Tesla T4, 15360, [N/A], [N/A]\n"
    assert parse_gpu_query(rows) == [
        GpuInfo(0, "NVIDIA A100-SXM4-80GB", 81920, 81000, "8.0"),
        GpuInfo(1, "Tesla T4", 15360, None, None),
    ]
    assert parse_gpu_query("0, Tesla V100-SXM2-16GB, 16384, 16000\n") == [
        GpuInfo(0, "Tesla V100-SXM2-16GB", 16384, 16000, None)
    ]
