"""Render built sections to a self-contained HTML file and a Markdown file (+ PNGs and CSVs beside them).

The HTML has inline CSS, images as ``data:image/png;base64`` URIs and no scripts, links or other external
references; every piece of text is escaped with :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

from reports.blocks import Figure, Heading, KeyValues, Table, Text
from reports.fmt import markdown_table


@dataclass
class BuiltSection:
    key: str
    title: str
    blocks: list
    error: str | None = None
    anchors: dict = field(default_factory=dict)


_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;color:#1b1b1b;
background:#fff;line-height:1.4;padding:0 16px}
h1{border-bottom:2px solid #333;padding-bottom:6px}
h2{margin-top:36px;border-bottom:1px solid #bbb;padding-bottom:4px}
h3{margin-top:22px}
.tw{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:8px 0 18px 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}
tr:nth-child(even) td{background:#fafafa}
caption{caption-side:top;text-align:left;font-weight:600;padding:4px 0}
figure{margin:10px 0 22px 0}
figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:13px;color:#444}
p.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px}
p.warn{background:#fdecea;border-left:4px solid #d93025;padding:6px 10px}
nav ul{columns:2}
.meta{color:#555;font-size:13px}
"""


def _esc(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _html_table(columns, rows, caption: str) -> str:
    out = ['<div class="tw"><table>', f"<caption>{_esc(caption)}</caption>", "<thead><tr>"]
    out += [f"<th>{_esc(c)}</th>" for c in columns]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _rows(df):
    return [["" if v is None else str(v) for v in r] for r in df.itertuples(index=False, name=None)]


def render_html(title: str, meta: List[str], sections: List[BuiltSection]) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{_esc(title)}</h1>"]
    parts += [f'<p class="meta">{_esc(m)}</p>' for m in meta]
    parts.append("<nav><strong>Contents</strong><ul>")
    parts += [f'<li><a href="#{_esc(s.key)}">{_esc(s.title)}</a></li>' for s in sections]
    parts.append("</ul></nav>")
    for s in sections:
        parts.append(f'<section id="{_esc(s.key)}"><h2>{_esc(s.title)}</h2>')
        if s.error:
            parts.append(f'<p class="warn">{_esc(s.error)}</p>')
        for b in s.blocks:
            if isinstance(b, Text):
                cls = {"note": ' class="note"', "warn": ' class="warn"'}.get(b.kind, "")
                parts.append(f"<p{cls}>{_esc(b.text)}</p>")
            elif isinstance(b, Heading):
                parts.append(f"<h3>{_esc(b.text)}</h3>")
            elif isinstance(b, Table):
                parts.append(_html_table(list(b.display.columns), _rows(b.display), b.caption))
            elif isinstance(b, KeyValues):
                parts.append(_html_table(["key", "value"], [[k, v] for k, v in b.items], b.caption))
            elif isinstance(b, Figure):
                data = base64.b64encode(b.png).decode("ascii")
                parts.append(f'<figure><img alt="{_esc(b.alt)}" src="data:image/png;base64,{data}">'
                             f"<figcaption>{_esc(b.caption)}</figcaption></figure>")
            else:  # pragma: no cover - programming error
                raise TypeError(f"unknown block {type(b).__name__}")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _md_text(s: str) -> str:
    # Stored text must not turn into HTML when the Markdown is rendered.
    return str(s).replace("<", "&lt;").replace("\n", " ")


def render_markdown(title: str, meta: List[str], sections: List[BuiltSection], figure_dir: str = "figures") -> str:
    out = [f"# {_md_text(title)}", ""]
    out += [f"{_md_text(m)}  " for m in meta]
    out.append("")
    for s in sections:
        out += [f"## {_md_text(s.title)}", ""]
        if s.error:
            out += [f"> **Error:** {_md_text(s.error)}", ""]
        for b in s.blocks:
            if isinstance(b, Text):
                prefix = {"note": "> **Note:** ", "warn": "> **Warning:** "}.get(b.kind, "")
                out += [prefix + _md_text(b.text), ""]
            elif isinstance(b, Heading):
                out += [f"### {_md_text(b.text)}", ""]
            elif isinstance(b, Table):
                out += [f"**{_md_text(b.caption)}** (`tables/{b.name}.csv`)", "",
                        markdown_table(list(b.display.columns), _rows(b.display)), ""]
            elif isinstance(b, KeyValues):
                out += [f"**{_md_text(b.caption)}**", "", markdown_table(["key", "value"], b.items), ""]
            elif isinstance(b, Figure):
                out += [f"![{_md_text(b.alt).replace(']', ')')}]({figure_dir}/{b.name}.png)", "",
                        f"*{_md_text(b.caption)}*", ""]
    return "\n".join(out).rstrip() + "\n"


def write_outputs(out_dir: Path, title: str, meta: List[str], sections: List[BuiltSection]) -> dict:
    out_dir = Path(out_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    seen: set = set()
    written = {"figures": [], "tables": []}
    for s in sections:
        for b in s.blocks:
            if isinstance(b, (Figure, Table)):
                key = (type(b).__name__, b.name)
                if key in seen:
                    raise ValueError(f"duplicate {key[0].lower()} name {b.name!r} in section {s.key!r}")
                seen.add(key)
            if isinstance(b, Figure):
                p = out_dir / "figures" / f"{b.name}.png"
                p.write_bytes(b.png)
                written["figures"].append(p)
            elif isinstance(b, Table):
                p = out_dir / "tables" / f"{b.name}.csv"
                b.csv_frame.to_csv(p, index=False)
                written["tables"].append(p)
    html_path = out_dir / "report.html"
    md_path = out_dir / "report.md"
    html_path.write_text(render_html(title, meta, sections), encoding="utf-8")
    md_path.write_text(render_markdown(title, meta, sections), encoding="utf-8")
    written["html"] = html_path
    written["markdown"] = md_path
    return written
