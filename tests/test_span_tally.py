"""`SpanTally`, summed one sentence at a time, scores what seqeval's `classification_report` scores
over the whole data set at once, on random sentences, gold spans (nested ones too) and answers."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nerft.data.records import CluenerRecord, Entity
from nerft.metrics.spans import SpanTally, bio_tags, gold_spans, ground_mentions

LABELS = ["name", "address", "company"]
ALPHABET = "北京上海大学李明"  # few characters: strings repeat, overlap and nest often


@st.composite
def sentences(draw):
    """A sentence, its gold entities (any spans, nested or overlapping), and predicted mentions:
    gold's own, substrings of the sentence under any label, and strings not in it."""
    text = draw(st.text(alphabet=ALPHABET, min_size=1, max_size=12))
    entities = []
    for _ in range(draw(st.integers(0, 4))):
        start = draw(st.integers(0, len(text) - 1))
        end = draw(st.integers(start, len(text) - 1))
        entities.append(Entity(start, end, draw(st.sampled_from(LABELS)), text[start : end + 1]))
    record = CluenerRecord(text=text, entities=entities)
    mentions = [m for m in record.mentions() if draw(st.booleans())]
    for _ in range(draw(st.integers(0, 3))):
        start = draw(st.integers(0, len(text) - 1))
        end = draw(st.integers(start, len(text) - 1))
        mentions.append((draw(st.sampled_from(LABELS)), text[start : end + 1]))
    if draw(st.booleans()):
        mentions.append((draw(st.sampled_from(LABELS)), "不在句中"))
    return record, mentions


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(sentences(), min_size=1, max_size=8))
def test_span_tally_is_seqeval_classification_report_over_the_whole_set(data):
    from seqeval.metrics import classification_report

    tally = SpanTally()
    true_tags, predicted_tags = [], []
    for record, mentions in data:
        tally.add(record, mentions)
        true_tags.append(bio_tags(len(record.text), gold_spans(record)[0]))
        predicted_tags.append(bio_tags(len(record.text), ground_mentions(record, mentions).spans))
    if not any(tag != "O" for tags in true_tags + predicted_tags for tag in tags):
        return  # seqeval has nothing to report; SpanTally's empty case is tested by hand
    expected = classification_report(true_tags, predicted_tags, output_dict=True, zero_division=0)
    scores = tally.scores(LABELS)
    keys = ("precision", "recall", "f1", "support")
    theirs = ("precision", "recall", "f1-score", "support")
    labels = {name for name in expected if not name.endswith(" avg")}
    assert set(scores.labels) == labels
    for label in labels:
        assert [scores.labels[label][k] for k in keys] == pytest.approx([expected[label][k] for k in theirs])
    assert [scores.micro[k] for k in keys] == pytest.approx([expected["micro avg"][k] for k in theirs])
    assert [scores.macro[k] for k in keys] == pytest.approx([expected["macro avg"][k] for k in theirs])
