"""A report page as a list of blocks, rendered to Markdown and to one self-contained HTML file.

Building the page once and rendering it twice keeps the two formats saying the same thing. The
HTML escapes every piece of text and embeds images as base64, so it can be mailed or attached on
its own.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    numeric: list[bool] | None = None  # right-align these columns; the first column is text

    def alignment(self) -> list[bool]:
        return self.numeric or [False] + [True] * (len(self.header) - 1)


@dataclass
class Image:
    path: Path  # a PNG written beside the page
    alt: str


@dataclass
class Link:
    path: Path  # a file beside the page (errors.html), linked by its relative path
    text: str


Block = Union[Heading, Paragraph, Table, Image, Link]


@dataclass
class Page:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> Page:
        self.blocks.extend(blocks)
        return self


def render_markdown(page: Page, *, base_dir: str | os.PathLike) -> str:
    """Markdown with images linked relative to `base_dir` (the folder the .md file goes to)."""
    out = [f"# {_md_text(page.title)}", ""]
    for block in page.blocks:
        if isinstance(block, Heading):
            out += [f"{'#' * block.level} {_md_text(block.text)}", ""]
        elif isinstance(block, Paragraph):
            out += [_md_text(block.text), ""]
        elif isinstance(block, Table):
            align = block.alignment()
            out.append("| " + " | ".join(_md_cell(cell) for cell in block.header) + " |")
            out.append("|" + "|".join("---:" if right else ":---" for right in align) + "|")
            for row in block.rows:
                out.append("| " + " | ".join(_md_cell(cell) for cell in row) + " |")
            out.append("")
        elif isinstance(block, Image):
            relative = _relative(block.path, base_dir)
            out += [f"![{_md_cell(block.alt)}]({relative})", ""]
        elif isinstance(block, Link):
            out += [f"[{_md_cell(block.text)}]({_relative(block.path, base_dir)})", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def render_html(page: Page, *, base_dir: str | os.PathLike | None = None) -> str:
    """One HTML file: escaped text, tables, and the PNGs embedded as data URIs; links relative to
    `base_dir` (the folder the .html file goes to), absolute without it."""
    body = [f"<h1>{html.escape(page.title)}</h1>"]
    for block in page.blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 2), 6)
            body.append(f"<h{level}>{html.escape(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            align = block.alignment()
            head = "".join(f"<th{_align(right)}>{html.escape(cell)}</th>" for cell, right in zip(block.header, align))
            rows = "".join(
                "<tr>"
                + "".join(f"<td{_align(right)}>{html.escape(cell)}</td>" for cell, right in zip(row, align))
                + "</tr>"
                for row in block.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Image):
            data = base64.b64encode(Path(block.path).read_bytes()).decode("ascii")
            body.append(f'<p><img alt="{html.escape(block.alt, quote=True)}" src="data:image/png;base64,{data}"></p>')
        elif isinstance(block, Link):
            target = _relative(block.path, base_dir) if base_dir is not None else Path(block.path).resolve().as_uri()
            body.append(f'<p><a href="{html.escape(target, quote=True)}">{html.escape(block.text)}</a></p>')
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(page.title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


STYLE = (
    "body{font-family:system-ui,-apple-system,'Segoe UI','Noto Sans CJK SC',sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
    "table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.3rem .6rem}"
    "th{background:#f3f3f3}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}"
    "img{max-width:100%}pre{background:#f6f6f6;padding:.8rem;overflow-x:auto}"
)


def _relative(path: str | os.PathLike, base_dir: str | os.PathLike) -> str:
    return os.path.relpath(path, base_dir).replace(os.sep, "/")


def _align(right: bool) -> str:
    return ' class="num"' if right else ""


def _md_text(text: str) -> str:
    return text.replace("\n", " ")


def _md_cell(text: str) -> str:
    """A table cell: pipes escaped, line breaks flattened."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
