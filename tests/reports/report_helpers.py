"""Helpers for the report tests: parse the Markdown tables of a built report; open it in Chromium."""

import contextlib
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


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def offline_page(url: str, viewport: dict, chromium="/usr/bin/chromium", requests=None):
    """Debian Chromium (through playwright) on ``url`` with every non-``file:`` request aborted; yields
    ``(page, seen, blocked)`` after the page and its images loaded (``seen``: every routed URL; ``requests``: a list
    that receives every request's URL, data: included)."""
    from playwright.sync_api import sync_playwright

    seen, blocked = [], []

    def route(r):
        seen.append(r.request.url)
        if r.request.url.startswith("file:"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport=viewport)
            if requests is not None:
                page.on("request", lambda req: requests.append(req.url))
            page.route("**/*", route)
            page.goto(url, wait_until="load")
            page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=20000)
            yield page, seen, blocked
        finally:
            browser.close()
