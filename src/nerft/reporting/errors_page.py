"""`errors.html`: every sentence with a mistake, gold and predicted entities highlighted inline.

Every one up to `nerft.metrics.evaluate.ERRORS_LISTED` (2000); past that the page shows the first
and says so, and errors.jsonl beside it lists all.

One self-contained page (inline CSS and JavaScript, no network): per sentence the gold line and
the predicted line, each entity in its label's colour, wrong ones outlined in red, and the list of
mistakes, each marked missed / spurious / wrong label / wrong boundary
(`nerft.metrics.confusion`). Two menus filter the sentences by label and by kind of mistake.

Predicted strings are placed in the sentence as span scoring places them
(`nerft.metrics.spans.ground_mentions`); a string that is not in the sentence shows only in the
list of mistakes.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nerft.io import write_text_atomic
from nerft.metrics.confusion import KINDS
from nerft.metrics.evaluate import EvalReport, ScoredSentence
from nerft.metrics.spans import Span, gold_spans, ground_mentions

ERRORS_PAGE = "errors.html"
# Light backgrounds that dark text reads on, one per label in sorted order (CLUENER has 10).
PALETTE = (
    "#ffd8a8",
    "#b2f2bb",
    "#a5d8ff",
    "#ffc9c9",
    "#d0bfff",
    "#fff3bf",
    "#99e9f2",
    "#fcc2d7",
    "#c0eb75",
    "#e9ecef",
    "#ffe066",
    "#bac8ff",
)


def label_colours(labels: Sequence[str]) -> dict[str, str]:
    """A colour per label, stable for the same label set (sorted order)."""
    ordered = sorted(dict.fromkeys(labels))
    return {
        label: PALETTE[index] if index < len(PALETTE) else f"hsl({index * 47 % 360}, 80%, 82%)"
        for index, label in enumerate(ordered)
    }


@dataclass
class ErrorViews:
    """The errors page of an evaluation (`nerft.metrics.evaluate.EvalReport`): its listed wrong
    sentences (all of them, up to `ERRORS_LISTED`), the counts of every mistake."""

    report: EvalReport

    def write_page(self, path: str | os.PathLike, *, title: str = "Errors") -> Path:

        path = Path(path)
        write_text_atomic(path, self.render(title=title))
        return path

    def render(self, *, title: str = "Errors") -> str:
        report = self.report
        labels = sorted(
            {
                *report.clue.labels,
                *report.clue.other_labels,
                *(e.label for s in report.listed for e in s.record.entities),
                *(label for s in report.listed for label, _ in (s.mentions or [])),
            }
        )
        colours = label_colours(labels)
        cards = [self._card(sentence, colours) for sentence in report.listed]
        summary = (
            f"{report.sentences_with_errors} of {report.records} sentences have a mistake: "
            + ", ".join(f"{report.mistakes.get(kind, 0)} {kind}" for kind in KINDS)
            + f"; {report.unparseable} unparseable answers."
        )
        if len(cards) < report.sentences_with_errors:
            summary += f" The first {len(cards)} are shown; errors.jsonl lists every one."
        legend = "".join(
            f'<span class="ent" style="background:{colour}">{html.escape(label)}</span> '
            for label, colour in colours.items()
        )
        options = "".join(
            f'<option value="{html.escape(label, quote=True)}">{html.escape(label)}</option>' for label in labels
        )
        kind_options = "".join(f'<option value="{kind}">{kind}</option>' for kind in KINDS)
        return (
            '<!DOCTYPE html>\n<html lang="zh">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f'<h1>{html.escape(title)}</h1>\n<p id="summary">{html.escape(summary)}</p>\n'
            f'<p class="legend">{legend}</p>\n'
            '<p class="filters">label <select id="label"><option value="">all</option>'
            f'{options}</select> kind <select id="kind"><option value="">all</option>{kind_options}</select> '
            '<span id="shown"></span></p>\n'
            '<p class="key"><span class="ent wrong">red outline</span> a mistake; '
            '<span class="ent">no outline</span> right</p>\n'
            + "\n".join(cards)
            + f"\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
        )

    @staticmethod
    def _card(sentence: ScoredSentence, colours: dict[str, str]) -> str:
        record, mentions = sentence.record, sentence.mentions
        correct = set(sentence.mistakes.correct)
        gold_line = highlight(record.text, gold_spans(record)[0], colours, wrong=lambda pair: pair not in correct)
        placed = ground_mentions(record, mentions or [])
        confidences = sentence.confidences or {}
        predicted_line = highlight(
            record.text,
            placed.spans,
            colours,
            wrong=lambda pair: pair not in correct,
            confidence=confidences.get,
        )
        items = []
        for mistake in sentence.mistakes.mistakes:
            labels = " ".join(mistake.labels())
            items.append(
                f'<li class="mistake" data-kind="{mistake.kind}" data-labels="{html.escape(labels, quote=True)}">'
                f'<span class="kind">{mistake.kind}</span> {html.escape(mistake.describe())}</li>'
            )
        if mentions is None:
            items.append('<li class="note">the answer could not be read: it predicts nothing</li>')
        where = f"line {record.line}" if record.line else f"sentence {sentence.index + 1}"
        return (
            f'<section class="sentence" data-index="{sentence.index}">'
            f"<h2>{html.escape(where)}</h2>"
            f'<div class="row"><span class="side">gold</span><span class="text gold">{gold_line}</span></div>'
            f'<div class="row"><span class="side">predicted</span><span class="text predicted">{predicted_line}</span></div>'
            f"<ul>{''.join(items)}</ul>"
            f"<details><summary>model answer</summary><pre>{html.escape(sentence.answer)}</pre></details>"
            "</section>"
        )


def highlight(
    text: str,
    spans: Sequence[Span],
    colours: dict[str, str],
    *,
    wrong=lambda pair: False,
    confidence=lambda pair: None,
) -> str:
    """`text` as HTML with each (start, inclusive end, label) span in a coloured `<mark>`; spans
    must not overlap. `wrong((label, entity))` outlines the span in red; `confidence((label,
    entity))`, when known, is written after the label."""
    out, position = [], 0
    for start, end, label in sorted(spans):
        entity = text[start : end + 1]
        out.append(html.escape(text[position:start]))
        classes = "ent wrong" if wrong((label, entity)) else "ent"
        sure = confidence((label, entity))
        caption = label if sure is None else f"{label} {sure:.2f}"
        title = label if sure is None else f"{label}, confidence {sure:.3f}"
        out.append(
            f'<mark class="{classes}" data-label="{html.escape(label, quote=True)}" '
            f'style="background:{colours.get(label, "#eee")}" title="{html.escape(title, quote=True)}">'
            f"{html.escape(entity)}<sub>{html.escape(caption)}</sub></mark>"
        )
        position = end + 1
    out.append(html.escape(text[position:]))
    return "".join(out)


STYLE = (
    "body{font-family:system-ui,-apple-system,'Segoe UI','Noto Sans CJK SC',sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
    ".sentence{border:1px solid #ddd;border-radius:6px;padding:.4rem .9rem;margin:.8rem 0}"
    ".sentence h2{font-size:.85rem;color:#666;margin:.2rem 0}"
    ".row{display:flex;gap:.8rem;margin:.35rem 0;line-height:2.1}.side{width:5.5rem;color:#666;font-size:.85rem;flex:none}"
    ".text{font-size:1.1rem}.ent{border-radius:4px;padding:.1rem .25rem;margin:0 .1rem;color:#222}"
    ".ent sub{font-size:.65rem;color:#555;margin-left:.15rem}.ent.wrong{outline:2px solid #d6336c}"
    "ul{margin:.3rem 0;padding-left:1.2rem}.kind{display:inline-block;min-width:7.5rem;font-size:.8rem;font-weight:600;color:#a61e4d}"
    "li.dim{opacity:.35}.legend .ent{display:inline-block;margin:.15rem}.filters select{margin-right:1rem}"
    "details{font-size:.85rem;color:#555}pre{background:#f6f6f6;padding:.5rem;white-space:pre-wrap}"
)

# Show a sentence when one of its mistakes has the chosen label and kind; dim its other mistakes.
SCRIPT = """
(function(){
  var label=document.getElementById('label'), kind=document.getElementById('kind');
  function apply(){
    var shown=0, cards=document.querySelectorAll('section.sentence');
    cards.forEach(function(card){
      var any=false;
      card.querySelectorAll('li.mistake').forEach(function(li){
        var ok=(!label.value||li.dataset.labels.split(' ').indexOf(label.value)>=0)&&(!kind.value||li.dataset.kind===kind.value);
        li.classList.toggle('dim',!ok); any=any||ok;
      });
      if(!label.value&&!kind.value) any=true;
      card.style.display=any?'':'none'; if(any) shown++;
    });
    document.getElementById('shown').textContent=shown+' of '+cards.length+' sentences shown';
  }
  label.addEventListener('change',apply); kind.addEventListener('change',apply); apply();
})();
"""


def errors_page_path(report: str | os.PathLike) -> Path:
    """`X/report.json` -> `X/errors.html`; another report name NAME.json -> `X/NAME_errors.html`."""
    report = Path(report)
    return report.parent / (ERRORS_PAGE if report.stem == "report" else f"{report.stem}_{ERRORS_PAGE}")
