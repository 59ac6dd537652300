from conftest import ROOT, load_script


def _generator():
    return load_script("gen_cli_docs")


def test_commands_doc_matches_the_help_of_every_command():
    generator = _generator()
    assert generator.DOC.read_text(encoding="utf-8") == generator.render(), (
        "docs/COMMANDS.md is stale: run python scripts/gen_cli_docs.py"
    )


def test_commands_doc_covers_every_command():
    text = (ROOT / "docs" / "COMMANDS.md").read_text(encoding="utf-8")
    for command in ["prepare", "train", "export", "serve", "predict", "eval", "download", "doctor", "report"]:
        assert f"## nerft {command}\n" in text
