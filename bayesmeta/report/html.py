"""A self-contained HTML page: inline CSS, PNG figures as data URIs, no scripts, nothing fetched."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass

__all__ = ["FigureBlock", "Section", "render_html"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1300px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; } h3 { margin-top: 1.5em; }
.scroll { overflow-x: auto; }
table.metrics { border-collapse: collapse; font-size: 0.85em; }
table.metrics th, table.metrics td { border: 1px solid #ddd; padding: 4px 8px; text-align: right;
       white-space: nowrap; vertical-align: top; }
table.metrics thead th { background: #f3f3f3; position: sticky; top: 0; }
table.metrics tbody th { text-align: left; }
td.best { background: #e3f4e1; font-weight: 600; }
.ci { color: #666; font-size: 0.85em; font-weight: normal; }
.desc { color: #777; font-size: 0.8em; font-weight: normal; white-space: normal; }
table.metrics tbody th { min-width: 14em; }
table.protocol td { text-align: left; white-space: normal; max-width: 28em; font-family: ui-monospace, monospace;
       font-size: 0.9em; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.note { color: #555; font-size: 0.9em; }
ul.runs { font-size: 0.9em; }
"""


@dataclass(frozen=True)
class FigureBlock:
    """A PNG figure with its caption and alt text."""

    title: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class Section:
    """A report section: a heading, an HTML table (already escaped), notes, figures, and the
    protocol of its runs (an HTML table, already escaped; may be empty)."""

    title: str
    table_html: str
    notes: tuple[str, ...]
    figures: tuple[FigureBlock, ...]
    protocol_html: str = ""


def _img(fig: FigureBlock) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    e = html.escape
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{e(fig.title)}">'
        f"<figcaption><strong>{e(fig.title)}.</strong> {e(fig.caption)}</figcaption></figure>"
    )


def render_html(title: str, intro: list[str], runs: list[tuple[str, str]], sections: list[Section]) -> str:
    """The full page.

    Args:
        title: page title.
        intro: paragraphs of plain text (escaped here).
        runs: ``(label, run directory)`` per run.
        sections: one per group of runs evaluated on identical episodes.
    """
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        *[f"<p>{e(p)}</p>" for p in intro],
        '<ul class="runs">',
        *[f"<li><strong>{e(label)}</strong>: <code>{e(path)}</code></li>" for label, path in runs],
        "</ul>",
    ]
    for s in sections:
        parts.append(f"<h2>{e(s.title)}</h2>")
        if s.protocol_html:
            parts.append("<h3>Protocol</h3>")
            parts.append(f'<div class="scroll">{s.protocol_html}</div>')
            parts.append("<h3>Results</h3>")
        parts.append(f'<div class="scroll">{s.table_html}</div>')
        parts.extend(f'<p class="note">{e(n)}</p>' for n in s.notes)
        parts.extend(_img(f) for f in s.figures)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
