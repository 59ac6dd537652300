"""scripts/gpu_check.py's logic without a GPU or a network: which requirements it carries, what
`fetch` downloads, what `probe` reports. (The whole `run --tiny` path was run on this CPU with the
device's packages simulated; see docs/PERFORMANCE.md, "GPU acceptance".)"""

from __future__ import annotations

import sys

from conftest import load_script

gpu_check = load_script("gpu_check")


def test_requirement_names_drop_versions_and_extras():
    assert [
        gpu_check.requirement_name(req)
        for req in ("llamafactory==0.9.5", "fsspec[http]>=2023.1.0,<=2025.3.0", "dill>=0.3.0,<0.3.9", "pytz")
    ] == [
        "llamafactory",
        "fsspec",
        "dill",
        "pytz",
    ]


def test_skip_and_only_choose_what_fetch_downloads():
    requirements = ["llamafactory==0.9.5", "pyarrow>=15", "pandas>=2", "python-dateutil"]
    assert gpu_check.selected(requirements, only=None, skip=["pandas", "python_dateutil"]) == [
        "llamafactory==0.9.5",
        "pyarrow>=15",
    ]
    assert gpu_check.selected(requirements, only=["pyarrow", "pandas"], skip=["pandas"]) == ["pyarrow>=15"]


def test_fetch_downloads_the_versions_that_run_here_with_llamafactory():
    assert gpu_check.fetch_spec("pyarrow>=15") == "pyarrow==26.0.1"
    assert gpu_check.fetch_spec("fsspec[http]>=2023.1.0,<=2025.3.0") == "fsspec==2025.3.0"
    assert (
        gpu_check.fetch_spec("transformers==5.6.0") == "transformers==5.6.0"
    )  # LLaMA-Factory 0.9.5's ceiling, not the device's 5.17
    assert "transformers==5.6.0" in gpu_check.REQUIREMENTS and "llamafactory==0.9.5" in gpu_check.REQUIREMENTS


def test_probe_reports_what_this_environment_already_satisfies():
    found = gpu_check.probe_requirements(sys.executable)
    assert found["python"] == "{}.{}".format(*sys.version_info[:2])
    assert found["requirements"]["llamafactory==0.9.5"] == {"installed": "0.9.5", "satisfied": True}
    assert set(found["requirements"]) == set(gpu_check.REQUIREMENTS)


def test_run_defaults_fit_ten_minutes_on_a_gpu_and_a_few_on_a_cpu():
    gpu = gpu_check.parse_args(["run"])
    assert (gpu.tiny, gpu.steps, gpu.limit, gpu.batch_size) == (False, 16, 24, [8, 24])
    cpu = gpu_check.parse_args(["run", "--tiny", "--steps", "3"])
    assert (cpu.tiny, cpu.steps, cpu.limit) == (True, 3, 16)


def test_run_without_the_carried_data_says_how_to_get_it(tmp_path, capsys):
    assert gpu_check.main(["run", "--data", str(tmp_path)]) == 1
    assert (
        f"{tmp_path / 'cluener' / 'train.jsonl'}: not found (scripts/gpu_check.py fetch copies the data"
        in capsys.readouterr().err
    )
