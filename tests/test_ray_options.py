"""`--ray` and its options, refused where they cannot apply, before any cluster is reached."""

import pytest
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.errors import ConfigError
from nerft.inference.options import EngineOptions
from nerft.inference.predict import open_engine
from nerft.runfolder import load_run


def test_ray_runs_engines_of_a_run_not_an_endpoint(tiny_run):
    with pytest.raises(ConfigError, match="an endpoint has its own --concurrency"):
        open_engine(EngineOptions(engine="openai", endpoint="http://127.0.0.1:9/v1", ray="default"))
    with pytest.raises(ConfigError, match="--ray needs --run RUN_DIR"):
        open_engine(EngineOptions(engine="hf", ray="default"))
    with pytest.raises(ConfigError, match="--ray-actors and --ray-cpus are for --ray"):
        open_engine(EngineOptions(engine="hf", ray_actors=2), load_run(tiny_run))


def test_predict_with_ray_options_but_no_ray_is_one_error_line(tiny_run):
    result = CliRunner().invoke(app, ["predict", "--run", str(tiny_run), "--text", "张三", "--ray-cpus", "2"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == "nerft: error: --ray-actors and --ray-cpus are for --ray"


@pytest.mark.parametrize(
    ("argv", "parsed"),
    [
        (["--ray"], ["--ray", "default"]),
        (["--ray", "--json"], ["--ray", "default", "--json"]),
        (["--ray", "10.0.0.1:6379", "--json"], ["--ray", "10.0.0.1:6379", "--json"]),
        (["--ray=auto"], ["--ray=auto"]),
        (["--text", "--ray"], ["--text", "--ray"]),  # the sentence "--ray", not the option
        (["--ray", "--", "--ray"], ["--ray", "default", "--", "--ray"]),
        (["--json", "--ray", "--text", "x"], ["--json", "--ray", "default", "--text", "x"]),
    ],
)
def test_bare_ray_gets_the_default_address_before_typer_parses(argv, parsed):
    from nerft.cli.common import with_optional_values

    assert with_optional_values(argv, {"--ray", "--text"}) == parsed


def test_bare_ray_reaches_the_engine_choice():
    """`--ray` without an address parses (Typer alone would say it requires an argument)."""
    argv = ["predict", "--endpoint", "http://127.0.0.1:9/v1", "--text", "张三"]
    for bare in (["--ray"], ["--ray", "--json"]):  # last, or before another option (not its value)
        result = CliRunner().invoke(app, argv + bare)
        assert result.exit_code == 1, result.output
        assert result.stderr.strip().splitlines()[-1].endswith("an endpoint has its own --concurrency")
        assert "--json" not in result.stderr
