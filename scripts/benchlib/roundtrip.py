"""Is a prompt format lossless? Render every record's answer, parse it back as `nerft eval` does, score it.

A format that saves tokens must not lose entities: the gold answer, read back by
`nerft.metrics.parse.parse_output` and scored by `nerft.metrics.clue.score_clue` against the
record's own entities, must score F1 = 1.0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from nerft.data.records import CluenerRecord
from nerft.prompts import PromptFormat


def round_trip_scores(
    records: Sequence[CluenerRecord],
    fmt: PromptFormat,
    *,
    parse: Callable[[str], list | None] | None = None,
    examples: int = 5,
) -> dict:
    """Micro precision, recall and F1 of parsed-back gold answers, and the first sentences that differ.

    `parse` is `nerft eval`'s parser unless another is given.
    """
    from nerft.metrics.clue import score_clue

    if parse is None:
        from nerft.metrics.parse import parse_output as parse
    gold = [record.mentions() for record in records]
    answers = [fmt.render_output(mentions) for mentions in gold]
    parsed = [parse(answer) for answer in answers]
    scores = score_clue(gold, [mentions or [] for mentions in parsed])
    micro = scores.micro
    differing = [
        {"answer": answer, "missing": diff.false_negatives, "extra": diff.false_positives}
        for answer, diff in zip(answers, scores.sentences)
        if not diff.correct
    ]
    return {
        "format": fmt.name,
        "sentences": len(records),
        "gold": micro.support,
        "precision": micro.precision,
        "recall": micro.recall,
        "f1": micro.f1 if micro.support else 1.0,
        "unparseable": sum(1 for mentions in parsed if mentions is None),
        "differing": len(differing),
        "examples": differing[:examples],
    }
