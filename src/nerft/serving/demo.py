"""`nerft demo`: a page on 127.0.0.1 to try a run: paste sentences, see the entities highlighted
with a label legend, each entity's confidence (least confident first), and the prediction rows as JSON.

It answers with the engine `nerft predict` opens (`open_engine`, the run's prompt format, system
prompt and template), and each sentence's row is `nerft predict`'s row (`predict_records`), so the
page shows what `nerft predict --text` prints. The engine is opened once, when the page starts.
"""

from __future__ import annotations

from collections.abc import Sequence

from nerft.data.records import CluenerRecord
from nerft.inference.documents import CLUENER_LONGEST_CHARS
from nerft.inference.engines import Engine
from nerft.inference.predict import predict_records
from nerft.prompts import PromptFormat
from nerft.reporting.errors_page import label_colours

EXAMPLE = "浙商银行企业信贷部叶老桂博士则从另一个角度对五道门槛进行了解读。"


def predict_text(text: str, engine: Engine, fmt: PromptFormat, max_chars: int = CLUENER_LONGEST_CHARS) -> list[dict]:
    """`nerft predict`'s rows for the non-blank lines of `text` (a line longer than `max_chars`
    is predicted in pieces, `nerft.inference.documents`)."""

    records = [CluenerRecord(text=line.strip(), labelled=False) for line in text.splitlines() if line.strip()]
    rows: list[dict] = []
    if records:
        predict_records(records, engine, fmt, sink=rows.append, max_chars=max_chars)
    return rows


def highlighted(rows: Sequence[dict]) -> dict:
    """gradio's HighlightedText value: the sentences one a line, each placed entity a span
    (`start`/`end` end-exclusive, shifted by the lines before it); nested entities keep the outer."""
    text, entities = "", []
    for row in rows:
        offset, taken_until = len(text), -1
        for entity in sorted(
            (e for e in row["entities"] if e.get("start") is not None), key=lambda e: (e["start"], -e["end"])
        ):
            if entity["start"] >= taken_until:  # HighlightedText cannot draw a nest
                entities.append(
                    {"entity": entity["label"], "start": offset + entity["start"], "end": offset + entity["end"]}
                )
                taken_until = entity["end"]
        text += row["text"] + "\n"
    return {"text": text.rstrip("\n"), "entities": entities}


def confidence_table(rows: Sequence[dict]) -> list[list]:
    """One line per predicted entity: sentence number, label, text and confidence (blank when the
    engine reports none), the least confident first: what to check by eye."""
    table = [
        [index, entity["label"], entity["text"], entity.get("confidence")]
        for index, row in enumerate(rows, start=1)
        for entity in row["entities"]
    ]
    return sorted(table, key=lambda line: (line[3] is None, line[3] if line[3] is not None else 0.0, line[0]))


def build_demo(engine: Engine, fmt: PromptFormat, *, title: str, max_chars: int = CLUENER_LONGEST_CHARS):
    """The gradio Blocks of the page (not launched)."""
    import gradio as gr

    colours = label_colours(fmt.labels)

    def answer(text: str):
        rows = predict_text(text, engine, fmt, max_chars)
        return highlighted(rows), confidence_table(rows), rows

    # system fonts: the default theme would fetch Google fonts, and the page must work offline
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    with gr.Blocks(title=title, theme=theme, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\nOne sentence or document a line. Labels: {', '.join(fmt.labels)}.")
        sentences = gr.Textbox(label="Sentences", lines=4, value="", placeholder=EXAMPLE, elem_id="sentences")
        submit = gr.Button("Find entities", variant="primary", elem_id="submit")
        entities = gr.HighlightedText(
            label="Entities", color_map=colours, show_legend=True, combine_adjacent=False, elem_id="entities"
        )
        confidences = gr.Dataframe(
            headers=["sentence", "label", "entity", "confidence"],
            label="Entities, least confident first",
            interactive=False,
            elem_id="confidences",
        )
        rows = gr.JSON(label="Predictions (the rows of nerft predict)", open=True, elem_id="rows")
        submit.click(answer, inputs=sentences, outputs=[entities, confidences, rows])
        sentences.submit(answer, inputs=sentences, outputs=[entities, confidences, rows])
    return demo
