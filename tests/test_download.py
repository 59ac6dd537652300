"""Base models: nerft's cache, resolving model names, and `nerft download` with no network."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.errors import ModelError
from nerft.models import download


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NERFT_CACHE", str(tmp_path / "cache"))


def test_cache_folder_comes_from_the_environment(tmp_path, monkeypatch):
    assert (
        download.model_cache_path("Qwen/Qwen2.5-7B-Instruct")
        == tmp_path / "cache" / "models" / "Qwen" / "Qwen2.5-7B-Instruct"
    )
    monkeypatch.delenv("NERFT_CACHE")
    assert download.cache_dir() == Path.home() / ".cache" / "nerft"


@pytest.mark.parametrize(
    ("name", "hub"),
    [
        ("Qwen/Qwen2.5-7B-Instruct", True),
        ("LLM-Research/Meta-Llama-3-8B-Instruct", True),
        ("qwen", False),
        ("../x/y", False),
        ("a/b/c", False),
    ],
)
def test_hub_ids(name, hub):
    assert download.is_hub_id(name) is hub


def test_a_downloaded_model_is_found_in_the_cache(tmp_path):
    folder = download.model_cache_path("Qwen/Qwen2.5-0.5B-Instruct")
    folder.mkdir(parents=True)
    assert download.find_model("Qwen/Qwen2.5-0.5B-Instruct") is None  # no config.json: not a model yet
    (folder / "config.json").write_text("{}")
    assert download.require_model("Qwen/Qwen2.5-0.5B-Instruct") == folder.resolve()


def test_a_local_folder_must_be_a_model(tmp_path):
    with pytest.raises(ModelError, match="not a model folder"):
        download.require_model(str(tmp_path))
    with pytest.raises(ModelError, match="no such folder"):
        download.require_model(str(tmp_path / "nothing-here"))


def test_no_network_fails_fast_saying_what_to_fetch_and_where(monkeypatch, tmp_path):
    monkeypatch.setattr(download, "probe_endpoint", lambda url, timeout: "ConnectError: no route to host")
    target = tmp_path / "cache" / "models" / "Qwen" / "Qwen2.5-7B-Instruct"
    result = CliRunner().invoke(app, ["download", "Qwen/Qwen2.5-7B-Instruct"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        "nerft: error: cannot reach https://www.modelscope.cn to download Qwen/Qwen2.5-7B-Instruct (ConnectError: no route to host) "
        "(on a machine with network: `modelscope download --model Qwen/Qwen2.5-7B-Instruct --local_dir Qwen2.5-7B-Instruct`, "
        f"then copy that folder to {target} (or point model.model_name_or_path at it))"
    )
    assert not target.exists()


def test_the_real_probe_gives_up_within_its_timeout():
    # An address from TEST-NET-1 (RFC 5737): never routed, so the probe must time out, not hang.
    start = time.perf_counter()
    reason = download.probe_endpoint("https://192.0.2.1", timeout=1.0)
    assert reason is not None
    assert time.perf_counter() - start < 5


def test_an_already_downloaded_model_is_not_fetched_again(monkeypatch):
    folder = download.model_cache_path("Qwen/Qwen2.5-0.5B-Instruct")
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    monkeypatch.setattr(download, "probe_endpoint", lambda url, timeout: pytest.fail("no network needed"))
    result = CliRunner().invoke(app, ["download", "Qwen/Qwen2.5-0.5B-Instruct"])
    assert result.exit_code == 0
    assert result.stdout.strip() == str(folder.resolve())


def test_a_bad_model_id_is_refused():
    result = CliRunner().invoke(app, ["download", "not an id"])
    assert result.exit_code == 1
    assert "is not a model id such as Qwen/Qwen2.5-7B-Instruct" in result.stderr


def test_a_finished_download_is_renamed_into_place(monkeypatch):
    calls = []

    def fake_snapshot(model_id, revision, local_dir):
        calls.append((model_id, revision, Path(local_dir).name))
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        (Path(local_dir) / "config.json").write_text("{}")
        return local_dir

    import sys

    import modelscope.hub.snapshot_download  # noqa: F401 - the module; the package re-exports a function of that name

    modelscope_download = sys.modules["modelscope.hub.snapshot_download"]
    monkeypatch.setattr(download, "probe_endpoint", lambda url, timeout: None)
    monkeypatch.setattr(modelscope_download, "snapshot_download", fake_snapshot)
    path = download.download_model("Qwen/Qwen2.5-0.5B-Instruct", revision="v1")
    assert calls == [("Qwen/Qwen2.5-0.5B-Instruct", "v1", "Qwen2.5-0.5B-Instruct.partial")]
    assert path == download.model_cache_path("Qwen/Qwen2.5-0.5B-Instruct").resolve()
    assert (path / "config.json").is_file() and not path.with_name("Qwen2.5-0.5B-Instruct.partial").exists()


@pytest.mark.parametrize("old", ["folder", "file", "none"])
def test_replace_dir_puts_the_new_folder_in_place_of_whatever_was_there(tmp_path, old):
    from nerft.io import replace_dir

    target, staging = tmp_path / "model", tmp_path / "model.partial"
    staging.mkdir()
    (staging / "config.json").write_text("{}")
    if old == "folder":
        target.mkdir()
        (target / "stale.bin").write_text("x")
    elif old == "file":
        target.write_text("not a folder")
    replace_dir(staging, target)
    assert sorted(p.name for p in target.iterdir()) == ["config.json"] and not staging.exists()
