"""The annotation tools' formats, both ways: doccano JSONL and Label Studio JSON tasks.

Read (by `nerft prepare`, `eval --gold`, `predict --data`: every reader of records), validated
like CLUE records, with the same `file:line: reason` errors:

- doccano sequence labelling, one object a line: `{"text": ..., "label": [[start, end, "TYPE"], ...]}`,
  `end` EXCLUSIVE (`text[start:end]`); `id` kept when present.
- Label Studio's JSON export: a list of tasks `{"id", "data": {"text": ...}, "annotations":
  [{"result": [{"type": "labels", "value": {"start", "end", "text", "labels": ["TYPE"]}}, ...]}]}`,
  `end` exclusive. The task's LAST annotation that was not cancelled is its gold (Label Studio
  lists them oldest first); a task without one is unlabelled, like a CLUE record without `label`.
  `predictions` (pre-annotations nobody accepted) are not gold and are not read. The sentence is
  `data.text`, or `data`'s only string value when the labelling config names it otherwise; the
  record's id is `data.id` (where `nerft convert` keeps it), else the task's id. Result
  items of another type than `labels` (relations, choices) are skipped with a warning.

A record is told apart by its shape (a `data` object: Label Studio; a `label` list: doccano;
otherwise CLUE), so one file may even mix them.

Written (by `nerft convert`): the same shapes, from records (as annotations) or from the rows of
`nerft predict` (as Label Studio `predictions`, the pre-annotations a person corrects, and as
doccano labels), with `label_studio_config(labels)`, the labelling config to paste into the
project.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape

from nerft.data.records import CluenerRecord, Entity, Finding
from nerft.data.validate import CheckedRecord, check_entities, check_json_record

FROM_NAME, TO_NAME = "label", "text"  # the names of the Labels and Text tags of label_studio_config


def check_any_record(value: dict, source: str, line: int, labels: Iterable[str] | None = None) -> CheckedRecord:
    """Validate one decoded JSON object of any of the shapes: Label Studio, doccano, or CLUE."""
    if isinstance(value.get("data"), dict) and "text" not in value:
        return check_label_studio_task(value, source, line, labels)
    if isinstance(value.get("label"), list):
        return check_doccano_record(value, source, line, labels)
    return check_json_record(value, source, line, labels)


def check_doccano_record(value: dict, source: str, line: int, labels: Iterable[str] | None = None) -> CheckedRecord:
    """Validate one doccano line `{"text", "label": [[start, end_exclusive, "TYPE"], ...]}`."""
    findings: list[Finding] = []
    text = _text(value.get("text"), "'text'", source, line, findings)
    if text is None:
        return CheckedRecord(None, findings)
    entities = []
    for item in value["label"]:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and type(item[0]) is int
            and type(item[1]) is int
            and isinstance(item[2], str)
        ):
            findings.append(Finding("error", source, line, f'label entry {item!r} is not [start, end, "TYPE"]'))
            continue
        entity = _entity(text, item[0], item[1], item[2], None, source, line, findings)
        if entity is not None:
            entities.append(entity)
    return _checked(text, entities, value.get("id"), True, source, line, labels, findings)


def check_label_studio_task(value: dict, source: str, line: int, labels: Iterable[str] | None = None) -> CheckedRecord:
    """Validate one Label Studio task; its gold is its last annotation that was not cancelled."""
    findings: list[Finding] = []
    data = value["data"]
    strings = [v for v in data.values() if isinstance(v, str)]
    raw = data["text"] if "text" in data else (strings[0] if len(strings) == 1 else None)
    text = _text(raw, "'data.text'", source, line, findings)
    if text is None:
        return CheckedRecord(None, findings)
    record_id = data.get("id", value.get("id"))  # the record's own id, kept in data by to_label_studio
    annotations = value.get("annotations") or []
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        findings.append(Finding("error", source, line, "'annotations' must be a list of objects"))
        return CheckedRecord(None, findings)
    kept = [a for a in annotations if not a.get("was_cancelled")]
    if not kept:
        return _checked(text, [], record_id, False, source, line, labels, findings)
    result = kept[-1].get("result")
    if not isinstance(result, list):
        findings.append(Finding("error", source, line, "an annotation's 'result' must be a list"))
        return CheckedRecord(None, findings)
    entities = []
    for item in result:
        regions = _regions(item, source, line, findings)
        for start, end, label, written in regions:
            entity = _entity(text, start, end, label, written, source, line, findings)
            if entity is not None:
                entities.append(entity)
    return _checked(text, entities, record_id, True, source, line, labels, findings)


def _regions(item, source: str, line: int, findings: list[Finding]) -> list[tuple]:
    """(start, end, label, text or None) per label of one result item."""
    if not isinstance(item, dict):
        findings.append(Finding("error", source, line, f"result item {item!r} is not an object"))
        return []
    if item.get("type", "labels") != "labels":
        findings.append(
            Finding(
                "warning",
                source,
                line,
                f"result item of type {item.get('type')!r} skipped (only 'labels' are entities)",
            )
        )
        return []
    region = item.get("value")
    if not isinstance(region, dict):
        findings.append(Finding("error", source, line, "a result item has no 'value' object"))
        return []
    start, end, names = region.get("start"), region.get("end"), region.get("labels")
    if type(start) is not int or type(end) is not int:
        findings.append(Finding("error", source, line, f"value start/end must be integers, found {start!r}, {end!r}"))
        return []
    if not (isinstance(names, list) and names and all(isinstance(name, str) for name in names)):
        findings.append(
            Finding("error", source, line, f"value 'labels' must be a non-empty list of label names, found {names!r}")
        )
        return []
    return [(start, end, name, region.get("text")) for name in names]


def _text(raw, name: str, source: str, line: int, findings: list[Finding]) -> str | None:
    if raw is None:
        findings.append(Finding("error", source, line, f"no {name} field"))
    elif not isinstance(raw, str):
        findings.append(Finding("error", source, line, f"{name} must be a string, found {type(raw).__name__}"))
    elif not raw.strip():
        findings.append(Finding("error", source, line, "empty text"))
    else:
        return raw
    return None


def _entity(
    text: str, start: int, end: int, label: str, written: str | None, source: str, line: int, findings: list[Finding]
) -> Entity | None:
    """The entity of an end-exclusive span, or None with an error when the span is not in the text."""
    where = f"{label} [{start}, {end})"
    if start >= end:
        findings.append(Finding("error", source, line, f"{where}: empty or reversed span (end is exclusive)"))
    elif start < 0 or end > len(text):
        findings.append(Finding("error", source, line, f"{where}: span outside the text (length {len(text)})"))
    elif written is not None and text[start:end] != written:
        findings.append(Finding("error", source, line, f"{where}: span covers {text[start:end]!r}, not {written!r}"))
    else:
        return Entity(start, end - 1, label, text[start:end])
    return None


def _checked(text, entities, record_id, labelled, source, line, labels, findings) -> CheckedRecord:
    if any(f.severity == "error" for f in findings):
        return CheckedRecord(None, findings)
    record = CluenerRecord(
        text=text, entities=sorted(set(entities)), id=record_id, labelled=labelled, source=source, line=line
    )
    findings.extend(check_entities(record, labels))
    return CheckedRecord(record, findings)


# ---- writing ----------------------------------------------------------------------------------


EntityScores = Mapping[Entity, float]  # a predicted entity's confidence (`nerft predict`'s rows)


def to_doccano(record: CluenerRecord, *, scores: EntityScores | None = None) -> dict:
    """doccano's JSONL shape; `end` exclusive. With `scores` (predictions) that know some
    confidence, the confidence of each label in `scores`, in the order of `label` (doccano keeps
    unknown keys as metadata)."""
    row: dict = {} if record.id is None else {"id": record.id}
    row["text"] = record.text
    row["label"] = [[entity.start, entity.end + 1, entity.label] for entity in record.entities]
    if scores is not None and any(scores.get(entity) is not None for entity in record.entities):
        row["scores"] = [scores.get(entity) for entity in record.entities]
    return row


def to_label_studio(
    record: CluenerRecord,
    *,
    as_prediction: bool = False,
    model_version: str = "nerft",
    scores: EntityScores | None = None,
    score: float | None = None,
) -> dict:
    """A Label Studio task: the entities as an annotation, or as a prediction (pre-annotations a
    person corrects) with `as_prediction`; a prediction's regions carry their entity's confidence as
    `score`, and the prediction the answer's (`score`), which Label Studio shows and sorts tasks by."""
    result = []
    for index, entity in enumerate(record.entities):
        region = {
            "id": f"e{index}",
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "type": "labels",
            "value": {"start": entity.start, "end": entity.end + 1, "text": entity.text, "labels": [entity.label]},
        }
        if as_prediction and scores is not None and scores.get(entity) is not None:
            region["score"] = scores[entity]
        result.append(region)
    task: dict = {"data": {"text": record.text}}
    if record.id is not None:
        task["data"]["id"] = record.id
    if as_prediction:
        prediction: dict = {"model_version": model_version, "result": result}
        if score is not None:
            prediction["score"] = score
        task["predictions"] = [prediction]
    elif record.labelled:
        task["annotations"] = [{"result": result}]
    return task


def record_of_prediction(row: dict) -> CluenerRecord:
    """The entities of one `nerft predict` row that have a place in the sentence (`start`/`end`,
    end exclusive), as a record."""
    return CluenerRecord(text=row["text"], entities=sorted(prediction_scores(row)), id=row.get("id"))


def prediction_scores(row: dict) -> dict[Entity, float | None]:
    """The placed entities of one `nerft predict` row and their confidences (None when unknown)."""
    found: dict[Entity, float | None] = {}
    for e in row.get("entities", []):
        if e.get("start") is None:
            continue
        confidence = e.get("confidence")
        known = isinstance(confidence, (int, float)) and not isinstance(confidence, bool)
        found.setdefault(Entity(e["start"], e["end"] - 1, e["label"], e["text"]), float(confidence) if known else None)
    return found


def label_studio_config(labels: Iterable[str]) -> str:
    """The labelling config of an NER project whose names match what `to_label_studio` writes."""
    tags = "\n".join(f'    <Label value="{escape(label, quote=True)}"/>' for label in sorted(dict.fromkeys(labels)))
    return (
        f'<View>\n  <Labels name="{FROM_NAME}" toName="{TO_NAME}">\n{tags}\n  </Labels>\n'
        f'  <Text name="{TO_NAME}" value="$text"/>\n</View>\n'
    )


# ---- nerft convert ----------------------------------------------------------------------------

FORMATS = ("label-studio", "doccano", "clue")
