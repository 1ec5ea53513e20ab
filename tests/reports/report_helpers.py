"""Helpers for the report tests: parse the Markdown tables of a built report."""

import re


def md_table(md: str, caption_start: str):
    """Parse the Markdown table that follows the bold caption starting with ``caption_start``.
    Returns (columns, rows) with ``\\|`` unescaped."""
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("**" + caption_start):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("|"):
                j += 1
            block = []
            while j < len(lines) and lines[j].startswith("|"):
                block.append(lines[j])
                j += 1
            split = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", b)[1:-1]] for b in block]
            assert re.fullmatch(r"\|(---\|)+", block[1]), block[1]
            return split[0], split[2:]
    raise AssertionError(f"no table with caption starting {caption_start!r}")


def md_rows_as_dicts(md: str, caption_start: str):
    cols, rows = md_table(md, caption_start)
    return [dict(zip(cols, r)) for r in rows]
