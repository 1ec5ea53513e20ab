"""LaTeX exports: booktabs tables (``latex/<name>.tex``, one ``table`` float each, ready for ``\\input``) and
``latex/tables.tex``, a standalone document that inputs every table and includes every PDF figure -- it compiles
with Debian's ``pdflatex`` (packages texlive-latex-base + texlive-latex-recommended: booktabs, graphicx, geometry).

Cells are the report's display strings; text is escaped for pdflatex (``& % $ # _ { } ~ ^ \\`` and the non-ASCII marks
the report uses: — – † ‡ ± × ≥ ≤ ▲ …), so a label or message from a store can never break the document.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Sequence

import pandas as pd

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"$<$",
            ">": r"$>$", "|": r"$|$"}
_UNICODE = {"—": "---", "–": "--", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "±": r"$\pm$",
            "×": r"$\times$", "≥": r"$\geq$", "≤": r"$\leq$", "▲": r"$\blacktriangle$", "…": r"\ldots{}",
            "·": r"$\cdot$", "’": "'", "‘": "`", "“": "``", "”": "''", "∞": r"$\infty$", "µ": r"$\mu$",
            "²": r"$^2$", "→": r"$\to$", "≈": r"$\approx$", "Δ": r"$\Delta$", "−": "-", "\u00a0": "~"}


def escape(text) -> str:
    """Plain text -> pdflatex-safe text."""
    out = []
    for ch in "" if text is None else str(text):
        if ch in _SPECIAL:
            out.append(_SPECIAL[ch])
        elif ord(ch) < 128:
            out.append(ch if ch not in "\n\r\t" else " ")
        elif ch in _UNICODE:
            out.append(_UNICODE[ch])
        else:  # anything else: its ASCII decomposition (é -> e), else a visible placeholder
            ascii_ = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode("ascii")
            out.append("".join(_SPECIAL.get(c, c) for c in ascii_) or "?")
    return "".join(out)


_NUMERIC = re.compile(r"^[\s≥≤~]*[-+]?(\d|\.\d|inf\b)")


def _align(col: pd.Series) -> str:
    vals = [str(v) for v in col if str(v) not in ("", "—")]
    return "r" if vals and all(_NUMERIC.match(v) for v in vals) else "l"


def table_tex(display: pd.DataFrame, caption: str, label: str, notes: Sequence[str] = ()) -> str:
    """One booktabs ``table`` float (\\toprule / \\midrule / \\bottomrule), shrunk to the line width if wider."""
    cols = list(display.columns)
    spec = "".join(_align(display[c]) for c in cols)
    lines = [r"\begin{table}[htbp]", r"\centering", r"\small", f"\\caption{{{escape(caption)}}}",
             f"\\label{{tab:{label}}}",
             r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
             f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(escape(c) for c in cols) + r" \\", r"\midrule"]
    for row in display.itertuples(index=False, name=None):
        lines.append(" & ".join(escape("" if v is None else v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}"]
    if notes:
        lines.append(r"\par\smallskip\parbox{\linewidth}{\raggedright\footnotesize "
                     + r"\\ ".join(escape(n) for n in notes) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def document_tex(title: str, tables: Iterable[str], figures: Iterable[tuple[str, str]],
                 banner: Sequence[str] = ()) -> str:
    """Standalone document: every ``latex/<name>.tex`` (\\input) and every ``figures/<name>.pdf``."""
    # default OT1 Computer Modern and math-mode symbols only: no font package beyond the two Debian packages
    out = [r"\documentclass[10pt]{article}", r"\usepackage{amssymb}", r"\usepackage{booktabs}", r"\usepackage{graphicx}",
           r"\usepackage[margin=1.8cm]{geometry}", r"\graphicspath{{../figures/}}", r"\begin{document}",
           f"\\section*{{{escape(title)}}}"]
    out += [escape(b) + r"\par" for b in banner]
    floats = 0
    for name in tables:
        out.append(f"\\input{{{name}.tex}}")
        floats += 1
        if floats % 4 == 0:  # flush floats now and then (LaTeX holds at most 18 unplaced ones)
            out.append(r"\clearpage")
    for name, caption in figures:
        out += [r"\begin{figure}[htbp]", r"\centering",
                f"\\includegraphics[width=\\linewidth,height=0.42\\textheight,keepaspectratio]{{{name}.pdf}}",
                f"\\caption{{{escape(caption)}}}", r"\end{figure}"]
        floats += 1
        if floats % 4 == 0:
            out.append(r"\clearpage")
    out.append(r"\end{document}")
    return "\n".join(x for x in out if x) + "\n"
