"""Render built sections to a self-contained HTML file and a Markdown file, with the exports beside them: figures as
PNG and PDF, every table as CSV, the paper tables as LaTeX (booktabs) plus ``latex/tables.tex``, attachments (the
official ``*_eval_results.json``).

The HTML has inline CSS, images as ``data:image/png;base64`` URIs and no scripts, links or other external
references; every piece of text is escaped with :func:`html.escape`. The banner (random-weights warning) comes first,
right under the title; a ``collapsed`` section is folded into ``<details>``.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

from reports import latex
from reports.blocks import Attachment, Figure, Heading, KeyValues, Table, Text
from reports.fmt import markdown_table


@dataclass
class BuiltSection:
    key: str
    title: str
    blocks: list
    error: str | None = None
    anchors: dict = field(default_factory=dict)
    collapsed: bool = False


_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;color:#1b1b1b;
background:#fff;line-height:1.4;padding:0 16px}
h1{border-bottom:2px solid #333;padding-bottom:6px}
h2{margin-top:30px;border-bottom:1px solid #bbb;padding-bottom:3px;font-size:21px}
section#headline h2{margin-top:12px}
h3{margin-top:22px}
.tw{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:6px 0 16px 0;font-size:13px;border-top:2px solid #222;
border-bottom:2px solid #222}
th,td{padding:3px 10px;text-align:left;vertical-align:top;border-bottom:1px solid #e3e3e3}
th{border-bottom:1px solid #222;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.s{white-space:nowrap}
p{font-size:14px}
.tw details{margin:6px 0 14px 0;font-size:14px}
tr:nth-child(even) td{background:#fafafa}
caption{caption-side:top;text-align:left;font-weight:600;padding:4px 0}
figure{margin:10px 0 22px 0}
figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:13px;color:#444}
p.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px}
p.warn{background:#fdecea;border-left:4px solid #d93025;padding:6px 10px}
nav{font-size:13px}nav ul{columns:3;margin:4px 0}
.meta{color:#555;font-size:12px;margin:2px 0}
.banner{background:#fff3cd;border:2px solid #b45309;border-radius:4px;padding:6px 12px;margin:8px 0;font-size:14px}
.banner strong{color:#7c2d12;font-size:15px}
.banner p{margin:2px 0}
p.tnote{font-size:12px;color:#444;margin:-12px 0 16px 0}
details>summary{cursor:pointer}
details>summary h2{display:inline}
h1{margin:8px 0 4px 0;font-size:26px}
"""


# numeric cells (a number, a unit, marks, a parenthesised aside) are right-aligned
_NUM = re.compile(r"^(≥ )?[-+]?(\d[\d.,]*(e[-+]?\d+)?|inf)(×|%| ?(B|KiB|MiB|GiB))?( [†‡])*( \(.*\))?( [†‡])*$")


def _esc(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _td(c) -> str:
    c = str(c)
    cls = "n" if _NUM.match(c) else ("s" if len(c) <= 28 else "")
    return f'<td class="{cls}">{_esc(c)}</td>' if cls else f"<td>{_esc(c)}</td>"


def _html_table(columns, rows, caption: str, collapsed: bool = False) -> str:
    out = ['<div class="tw">']
    if collapsed:
        out.append(f"<details><summary><strong>{_esc(caption)}</strong> (click to unfold)</summary>")
    out += ["<table>", f"<caption>{_esc(caption)}</caption>", "<thead><tr>"]
    out += [f"<th>{_esc(c)}</th>" for c in columns]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join(_td(c) for c in row) + "</tr>")
    out.append("</tbody></table>" + ("</details>" if collapsed else "") + "</div>")
    return "".join(out)


def _rows(df):
    return [["" if v is None else str(v) for v in r] for r in df.itertuples(index=False, name=None)]


def _banner_html(banner: List[str]) -> str:
    if not banner:
        return ""
    head, rest = banner[0], banner[1:]
    return ('<div class="banner" id="banner">' + f"<p><strong>{_esc(head)}</strong></p>"
            + "".join(f"<p>{_esc(b)}</p>" for b in rest) + "</div>")


def render_html(title: str, meta: List[str], sections: List[BuiltSection], banner: List[str] = ()) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{_esc(title)}</h1>"]
    parts += [f'<p class="meta">{_esc(m)}</p>' for m in meta]
    parts.append(_banner_html(list(banner)))
    nav = ["<nav><strong>Contents</strong><ul>"]
    nav += [f'<li><a href="#{_esc(s.key)}">{_esc(s.title)}</a></li>' for s in sections]
    nav.append("</ul></nav>")
    for i, s in enumerate(sections):
        if i == 1 or (i == 0 and len(sections) == 1):  # after the first (headline) section: it must fit the first screen
            parts += nav
        if s.collapsed:
            parts.append(f'<details id="{_esc(s.key)}"><summary><h2>{_esc(s.title)}</h2></summary><section>')
        else:
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
                parts.append(_html_table(list(b.display.columns), _rows(b.display), b.caption, b.collapsed))
                if b.notes:
                    parts.append('<p class="tnote">' + "<br>".join(_esc(n) for n in b.notes) + "</p>")
            elif isinstance(b, Attachment):
                continue  # written beside the report; the section lists it
            elif isinstance(b, KeyValues):
                parts.append(_html_table(["key", "value"], [[k, v] for k, v in b.items], b.caption))
            elif isinstance(b, Figure):
                data = base64.b64encode(b.png).decode("ascii")
                parts.append(f'<figure><img alt="{_esc(b.alt)}" src="data:image/png;base64,{data}">'
                             f"<figcaption>{_esc(b.caption)}</figcaption></figure>")
            else:  # pragma: no cover - programming error
                raise TypeError(f"unknown block {type(b).__name__}")
        parts.append("</section></details>" if s.collapsed else "</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _md_text(s: str) -> str:
    # Stored text must not turn into HTML when the Markdown is rendered.
    return str(s).replace("<", "&lt;").replace("\n", " ")


def render_markdown(title: str, meta: List[str], sections: List[BuiltSection], figure_dir: str = "figures",
                    banner: List[str] = ()) -> str:
    out = [f"# {_md_text(title)}", ""]
    out += [f"{_md_text(m)}  " for m in meta]
    out.append("")
    if banner:
        out += [f"> **{_md_text(banner[0])}**", ">"] + [f"> {_md_text(b)}" for b in banner[1:]] + [""]
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
                out += [f"**{_md_text(b.caption)}** (`tables/{b.name}.csv`"
                        + (f", `latex/{b.name}.tex`" if b.latex else "") + ")", "",
                        markdown_table(list(b.display.columns), _rows(b.display)), ""]
                out += [f"{_md_text(n)}  " for n in b.notes] + ([""] if b.notes else [])
            elif isinstance(b, KeyValues):
                out += [f"**{_md_text(b.caption)}**", "", markdown_table(["key", "value"], b.items), ""]
            elif isinstance(b, Figure):
                out += [f"![{_md_text(b.alt).replace(']', ')')}]({figure_dir}/{b.name}.png)", "",
                        f"*{_md_text(b.caption)}*", ""]
    return "\n".join(out).rstrip() + "\n"


def write_outputs(out_dir: Path, title: str, meta: List[str], sections: List[BuiltSection],
                  banner: List[str] = ()) -> dict:
    """Write report.html, report.md, figures/*.png|pdf, tables/*.csv, latex/*.tex (+ tables.tex) and attachments."""
    out_dir = Path(out_dir)
    for sub in ("figures", "tables", "latex"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    seen: set = set()
    written = {"figures": [], "figures_pdf": [], "tables": [], "latex": [], "attachments": []}
    tex_tables, tex_figures = [], []
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
                if b.pdf:
                    (out_dir / "figures" / f"{b.name}.pdf").write_bytes(b.pdf)
                    written["figures_pdf"].append(out_dir / "figures" / f"{b.name}.pdf")
                    tex_figures.append((b.name, b.caption))
            elif isinstance(b, Table):
                p = out_dir / "tables" / f"{b.name}.csv"
                b.csv_frame.to_csv(p, index=False)
                written["tables"].append(p)
                if b.latex:
                    t = out_dir / "latex" / f"{b.name}.tex"
                    t.write_text(latex.table_tex(b.display, b.caption, b.name, b.notes), encoding="utf-8")
                    written["latex"].append(t)
                    tex_tables.append(b.name)
            elif isinstance(b, Attachment):
                p = out_dir / b.path
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(b.data)
                written["attachments"].append(p)
    doc = out_dir / "latex" / "tables.tex"
    doc.write_text(latex.document_tex(title, tex_tables, tex_figures, list(banner)), encoding="utf-8")
    written["latex_document"] = doc
    html_path = out_dir / "report.html"
    md_path = out_dir / "report.md"
    html_path.write_text(render_html(title, meta, sections, banner), encoding="utf-8")
    md_path.write_text(render_markdown(title, meta, sections, banner=banner), encoding="utf-8")
    written["html"] = html_path
    written["markdown"] = md_path
    return written
