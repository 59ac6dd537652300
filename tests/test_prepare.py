"""`nerft prepare` / `prepare_dataset`: outputs, registration, split, options, atomicity."""

import json

import pytest
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.data.prepare import prepare_dataset
from nerft.errors import ConfigError, DataError
from nerft.prompts import SEED_INSTRUCTION, PromptFormat

ALPACA_ENTRY = {
    "formatting": "alpaca",
    "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system"},
}
FOREIGN = {
    "alpaca_zh_demo": {"file_name": "alpaca_zh_demo.json"},
    "identity": {"file_name": "identity.json", "columns": {"prompt": "q", "response": "a"}, "tags": ["零", 1, None]},
}


def numbered(n):
    """n one-entity records whose text says which one they are."""
    return [
        {
            "text": f"第{i}条：张{i}来了",
            "label": {"name": {f"张{i}": [[len(f"第{i}条："), len(f"第{i}条：") + len(str(i))]]}},
        }
        for i in range(n)
    ]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def snapshot(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_numbered_records_are_valid():
    rows = numbered(12)
    assert rows[11]["text"] == "第11条：张11来了" and rows[11]["label"] == {"name": {"张11": [[5, 7]]}}


def test_outputs_of_a_train_dev_test_run(tmp_path, sample_dir):
    out = tmp_path / "dataset"
    result = prepare_dataset(
        train=sample_dir / "train.jsonl", dev=sample_dir / "dev.jsonl", test=sample_dir / "test.jsonl", out_dir=out
    )
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "cluener_dev.gold.jsonl",
        "cluener_dev.json",
        "cluener_meta.json",
        "cluener_test.gold.jsonl",
        "cluener_test.json",
        "cluener_train.gold.jsonl",
        "cluener_train.json",
        "dataset_info.json",
    ]
    # The gold files hold the records in CLUE's shape, byte-for-byte what nerft reads back.
    assert (out / "cluener_dev.gold.jsonl").read_text(encoding="utf-8") == (sample_dir / "dev.jsonl").read_text(
        encoding="utf-8"
    )
    assert load(out / "dataset_info.json") == {
        f"cluener_{split}": {"file_name": f"cluener_{split}.json", **ALPACA_ENTRY} for split in ("train", "dev", "test")
    }
    assert [len(load(out / f"cluener_{split}.json")) for split in ("train", "dev", "test")] == [32, 9, 6]
    meta = load(out / "cluener_meta.json")
    assert (meta["prompt"], meta["system"]) == ("compact", "NER")
    assert meta["datasets"] == {"train": "cluener_train", "dev": "cluener_dev", "test": "cluener_test"}
    assert meta["splits"]["dev"]["records"] == 9
    assert result.dataset_names == meta["datasets"] and result.errors == [] and result.skipped == 0


def test_merge_keeps_foreign_entries_exactly(tmp_path, sample_dir):
    out = tmp_path / "dataset"
    out.mkdir()
    (out / "dataset_info.json").write_text(json.dumps(FOREIGN, ensure_ascii=False, indent=4), encoding="utf-8")
    prepare_dataset(train=sample_dir / "train.jsonl", dev=sample_dir / "dev.jsonl", out_dir=out, name="ner")
    info = load(out / "dataset_info.json")
    assert list(info) == ["alpaca_zh_demo", "identity", "ner_train", "ner_dev"]
    assert {key: info[key] for key in FOREIGN} == FOREIGN
    assert info["ner_train"] == {"file_name": "ner_train.json", **ALPACA_ENTRY}


def test_a_broken_dataset_info_is_refused_before_anything_is_written(tmp_path, sample_dir):
    out = tmp_path / "dataset"
    out.mkdir()
    (out / "dataset_info.json").write_text('{"alpaca_zh_demo": {"file_name": "a.json"},\n}', encoding="utf-8")
    before = snapshot(out)
    with pytest.raises(DataError, match=r"dataset_info.json:2: broken JSON .*nerft will not overwrite it"):
        prepare_dataset(train=sample_dir / "train.jsonl", out_dir=out)
    assert snapshot(out) == before


def test_second_run_leaves_every_file_byte_identical(tmp_path, sample_dir):
    out = tmp_path / "dataset"
    out.mkdir()
    (out / "dataset_info.json").write_text(json.dumps(FOREIGN), encoding="utf-8")
    args = dict(train=sample_dir / "train.jsonl", test=sample_dir / "test.jsonl", out_dir=out, seed=7)
    prepare_dataset(**args)
    first = snapshot(out)
    prepare_dataset(**args)
    assert snapshot(out) == first


def test_split_is_deterministic_by_seed_with_an_exact_dev_count(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", numbered(47))

    def split(seed, folder, val_size=0.2):
        prepare_dataset(train=train, out_dir=tmp_path / folder, seed=seed, val_size=val_size)
        return [
            [example["instruction"] for example in load(tmp_path / folder / f"cluener_{part}.json")]
            for part in ("train", "dev")
        ]

    train_a, dev_a = split(1, "a")
    train_b, dev_b = split(1, "b")
    train_c, dev_c = split(2, "c")
    assert (train_a, dev_a) == (train_b, dev_b)
    assert len(dev_a) == round(47 * 0.2) == 9 and len(train_a) == 38
    assert len(dev_c) == 9 and dev_c != dev_a
    # Nothing lost or duplicated, and each part keeps the file's order.
    all_texts = [row["text"] for row in numbered(47)]
    assert sorted(train_a + dev_a) == sorted(all_texts)
    assert train_a == [t for t in all_texts if t in train_a] and dev_a == [t for t in all_texts if t in dev_a]
    _, dev_d = split(1, "d", val_size=0.5)
    assert len(dev_d) == round(47 * 0.5) == 24


def test_dev_file_disables_the_split(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", numbered(10))
    dev = write_jsonl(tmp_path / "dev.jsonl", numbered(3))
    result = prepare_dataset(train=train, dev=dev, out_dir=tmp_path / "out", val_size=0.5)
    assert [e["instruction"] for e in load(tmp_path / "out" / "cluener_train.json")] == [
        r["text"] for r in numbered(10)
    ]
    assert len(load(tmp_path / "out" / "cluener_dev.json")) == 3
    assert (result.splits["train"].records, result.splits["dev"].records) == (10, 3)


def test_val_size_zero_writes_no_dev(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", numbered(5))
    prepare_dataset(train=train, out_dir=tmp_path / "out", val_size=0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == [
        "cluener_meta.json",
        "cluener_train.gold.jsonl",
        "cluener_train.json",
        "dataset_info.json",
    ]


@pytest.mark.parametrize(
    "val_size, message",
    [
        (1.0, r"--val-size must be in \[0, 1\), got 1.0"),
        (0.01, "selects no dev record"),
        (0.95, "leaves no train records"),
    ],
)
def test_impossible_val_sizes(tmp_path, val_size, message):
    train = write_jsonl(tmp_path / "train.jsonl", numbered(10))
    with pytest.raises(DataError, match=message):
        prepare_dataset(train=train, out_dir=tmp_path / "out", val_size=val_size)
    assert not (tmp_path / "out").exists()


def test_skip_invalid_writes_the_valid_records_and_counts_the_skipped(tmp_path):
    rows = numbered(6)
    rows[1] = {"text": "张三", "label": {"name": {"张三": [[0, 5]], "李四": [[0, 1]]}}}  # two errors, one record
    rows[3] = {"text": ""}
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError, match=r"2 invalid record\(s\); nothing was written"):
        prepare_dataset(train=train, out_dir=tmp_path / "out", val_size=0)
    assert not (tmp_path / "out").exists()
    result = prepare_dataset(train=train, out_dir=tmp_path / "out", val_size=0, skip_invalid=True)
    assert result.skipped == 2 and len(result.errors) == 3
    texts = [e["instruction"] for e in load(tmp_path / "out" / "cluener_train.json")]
    assert texts == [rows[i]["text"] for i in (0, 2, 4, 5)]


def test_a_refusal_lists_the_warnings_too_errors_first(tmp_path):
    rows = numbered(3)
    rows[0] = {"text": "张三 在", "label": {"name": {"张三 ": [[0, 2]]}}}  # warning: trailing whitespace
    rows[2] = {"text": "李四", "label": {"name": {"李四": [[0, 5]]}}}  # error: span out of range
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError) as refused:
        prepare_dataset(train=train, out_dir=tmp_path / "out", val_size=0)
    lines = str(refused.value).splitlines()
    assert lines[0].startswith(f"{train}:3: error: ") and lines[1].startswith(f"{train}:1: warning: ")
    assert lines[2] == "1 invalid record(s); nothing was written (--skip-invalid writes the valid ones)"


def test_skip_invalid_with_no_valid_record_left(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": ""}])
    with pytest.raises(DataError, match="no valid records"):
        prepare_dataset(train=train, out_dir=tmp_path / "out", skip_invalid=True)


def test_labels_option(tmp_path, sample_dir):
    with pytest.raises(DataError) as info:
        prepare_dataset(train=sample_dir / "train.jsonl", out_dir=tmp_path / "out", labels=["name", "address"])
    first = str(info.value).splitlines()[0]
    assert first == f"{sample_dir / 'train.jsonl'}:1: error: unknown label 'company' (allowed: address, name)"
    assert not (tmp_path / "out").exists()
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "张三在北京", "label": {"name": {"张三": [[0, 1]]}}}])
    prepare_dataset(train=train, out_dir=tmp_path / "out", labels=["name", "address"], prompt="seed", val_size=0)
    (example,) = load(tmp_path / "out" / "cluener_train.json")
    assert "<实体类别集合>\nname, address\n" in example["instruction"]
    assert load(tmp_path / "out" / "cluener_meta.json")["labels"] == ["name", "address"]


RECORD = {
    "text": "叶老桂认为，浙商银行的叶老桂是行长。",
    # label order in the file is not the order of the entities in the text
    "label": {
        "position": {"行长": [[15, 16]]},
        "company": {"浙商银行": [[6, 9]]},
        "name": {"叶老桂": [[0, 2], [11, 13]]},
    },
}


def test_compact_examples_list_entities_in_order_of_first_occurrence(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [RECORD, {"text": "今天天气很好", "label": {}}])
    prepare_dataset(train=train, out_dir=tmp_path / "out", val_size=0)
    assert load(tmp_path / "out" / "cluener_train.json") == [
        {
            "instruction": RECORD["text"],
            "input": "",
            "output": "name:叶老桂\ncompany:浙商银行\nposition:行长",
            "system": "NER",
        },
        {"instruction": "今天天气很好", "input": "", "output": "无", "system": "NER"},
    ]


def test_seed_examples_are_the_tutorials(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [RECORD, {"text": "今天天气很好", "label": {}}])
    result = prepare_dataset(train=train, out_dir=tmp_path / "out", val_size=0, prompt="seed")
    instruction = SEED_INSTRUCTION.format(
        labels="name, organization, scene, company, movie, book, government, position, address, game"
    )
    assert load(tmp_path / "out" / "cluener_train.json") == [
        {
            "instruction": instruction,
            "input": RECORD["text"],
            "system": "You are a helpful assistant.",
            "output": '[{"label": "name", "text": "叶老桂"}, {"label": "company", "text": "浙商银行"}, {"label": "position", "text": "行长"}]',
        },
        {"instruction": instruction, "input": "今天天气很好", "output": "[]", "system": "You are a helpful assistant."},
    ]
    assert result.prompt == "seed"


def test_unlabelled_test_records_have_an_empty_output(tmp_path, sample_dir):
    test = write_jsonl(tmp_path / "test.jsonl", [{"id": 3, "text": "张三来了"}])
    prepare_dataset(train=sample_dir / "train.jsonl", test=test, out_dir=tmp_path / "out")
    assert load(tmp_path / "out" / "cluener_test.json") == [
        {"instruction": "张三来了", "input": "", "output": "", "system": "NER"}
    ]


def test_unknown_prompt_format(tmp_path, sample_dir):
    with pytest.raises(ConfigError, match="unknown prompt format 'long'"):
        prepare_dataset(train=sample_dir / "train.jsonl", out_dir=tmp_path / "out", prompt="long")


def test_a_failure_mid_way_leaves_nothing_behind(tmp_path, sample_dir, monkeypatch):
    out = tmp_path / "dataset"
    args = dict(
        train=sample_dir / "train.jsonl", dev=sample_dir / "dev.jsonl", test=sample_dir / "test.jsonl", out_dir=out
    )
    out.mkdir()
    (out / "dataset_info.json").write_text(json.dumps(FOREIGN), encoding="utf-8")
    prepare_dataset(**args, name="old")
    before = snapshot(out)

    real_example = PromptFormat.example
    calls = []

    def failing_example(self, record):
        calls.append(record)
        if len(calls) == 35:  # inside the dev file, after all of train was written
            raise OSError("disk full")
        return real_example(self, record)

    monkeypatch.setattr(PromptFormat, "example", failing_example)
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset(**args, name="new")
    assert snapshot(out) == before  # no new file, no temporary file, nothing truncated or registered
    with pytest.raises(OSError, match="disk full"):
        calls.clear()
        prepare_dataset(**args, name="old")
    assert snapshot(out) == before  # the old files are whole


# The command


def test_cli_summary(tmp_path, sample_dir):
    out = tmp_path / "dataset"
    result = CliRunner().invoke(
        app,
        [
            "prepare",
            "--train",
            str(sample_dir / "train.jsonl"),
            "--dev",
            str(sample_dir / "dev.jsonl"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["train", "dev"]
    assert lines[1].split() == ["records", "32", "9"]
    table = {line.split()[0]: line.split()[1:] for line in lines[2:12]}
    # entity spans per label, counted in data/sample
    train_counts, dev_counts = {}, {}
    for path, counts in ((sample_dir / "train.jsonl", train_counts), (sample_dir / "dev.jsonl", dev_counts)):
        for row in map(json.loads, path.read_text(encoding="utf-8").splitlines()):
            for label, mentions in row["label"].items():
                counts[label] = counts.get(label, 0) + sum(len(spans) for spans in mentions.values())
    assert table == {label: [str(train_counts.get(label, 0)), str(dev_counts.get(label, 0))] for label in table}
    assert sorted(table) == sorted(train_counts.keys() | dev_counts.keys())
    assert lines[-3].split() == ["cluener_dev", str(out / "cluener_dev.json")]
    assert lines[-2] == f"registered in {out / 'dataset_info.json'} (prompt format: compact)"
    assert lines[-1] == "0 errors / 0 warnings"


def test_cli_json_and_skipped_count(tmp_path):
    train = write_jsonl(
        tmp_path / "train.jsonl", [*numbered(4), {"text": "张三", "label": {"name": {"张三": [[0, 9]]}}}]
    )
    result = CliRunner().invoke(
        app,
        ["prepare", "--train", str(train), "--out", str(tmp_path / "o"), "--val-size", "0", "--skip-invalid", "--json"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["errors"], data["warnings"], data["skipped"]) == (1, 0, 1)
    assert data["splits"]["train"]["records"] == 4
    assert f"{train}:5: error: name '张三': span [0, 9] is outside the text (length 2)" in result.stderr
    text = CliRunner().invoke(
        app, ["prepare", "--train", str(train), "--out", str(tmp_path / "o"), "--val-size", "0", "--skip-invalid"]
    )
    assert text.stdout.splitlines()[-1] == "1 errors / 0 warnings, 1 invalid record(s) skipped"


def test_cli_labels_option_error(tmp_path, sample_dir):
    result = CliRunner().invoke(
        app,
        [
            "prepare",
            "--train",
            str(sample_dir / "train.jsonl"),
            "--out",
            str(tmp_path / "o"),
            "--labels",
            "name, address",
        ],
    )
    assert result.exit_code == 1
    assert "unknown label 'company' (allowed: address, name)" in result.stderr
    assert "Traceback" not in result.output


# ACCEPTANCE on the real CLUENER files (skipped without ../shared)


def test_acceptance_prepare_full_cluener(cluener_dir, tmp_path):
    out = tmp_path / "dataset"
    result = CliRunner().invoke(
        app,
        [
            "prepare",
            "--train",
            str(cluener_dir / "train.jsonl"),
            "--dev",
            str(cluener_dir / "dev.jsonl"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].split() == ["records", "10748", "1343"]
    assert result.stdout.splitlines()[-1] == "0 errors / 2 warnings"
    # the one record of train with nested spans
    assert result.stderr.count("train.jsonl:1507: warning: nested spans: book") == 2
    assert len(load(out / "cluener_train.json")) == 10748


def test_a_dev_split_cut_from_train_has_a_gold_file_with_the_same_records(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", numbered(13))
    prepare_dataset(train=train, out_dir=tmp_path / "out", val_size=0.25, seed=3)
    dev_examples = load(tmp_path / "out" / "cluener_dev.json")
    gold = [
        json.loads(line)
        for line in (tmp_path / "out" / "cluener_dev.gold.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert len(gold) == len(dev_examples) == 3  # round(13 * 0.25)
    assert [row["text"] for row in gold] == [example["instruction"] for example in dev_examples]
    by_text = {row["text"]: row for row in numbered(13)}
    assert all(row == by_text[row["text"]] for row in gold)
