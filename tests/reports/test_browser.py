"""Open the built report in headless Debian Chromium (via the playwright package, never `playwright install`):
no request may leave file://, the screenshot must not be blank, and every embedded plot must decode."""

import io
import os
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists() and not os.environ.get("CI"),
                       reason="/usr/bin/chromium is not installed (outside CI only; in CI this test must run)"),
]


def _pixels(png: bytes) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(io.BytesIO(png), format="png")[..., :3]


def _not_blank(png: bytes, min_std: float = 0.03, min_non_white: float = 0.01):
    px = _pixels(png)
    non_white = float((px.min(axis=-1) < 0.9).mean())
    assert px.std() > min_std and non_white > min_non_white, (px.std(), non_white)


def test_report_renders_offline_in_chromium(report, tmp_path):
    from playwright.sync_api import sync_playwright

    url = (report["out"] / "report.html").resolve().as_uri()
    seen, blocked = [], []

    def route(r):
        seen.append(r.request.url)
        if r.request.url.startswith("file:"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            requests = []
            page.on("request", lambda req: requests.append(req.url))
            page.route("**/*", route)
            page.goto(url, wait_until="load")
            page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=20000)
            images = page.evaluate("Array.from(document.images).map(i => [i.naturalWidth, i.naturalHeight])")
            title = page.title()
            shot = page.screenshot(full_page=False)
            page.locator("img").first.scroll_into_view_if_needed()
            img_shot = page.locator("img").first.screenshot()
        finally:
            browser.close()
    (tmp_path / "report.png").write_bytes(shot)

    assert title == "Fixture report"
    assert seen and seen[0] == url
    assert not blocked, blocked
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    assert len(images) == len(report["figures"]) == 9
    assert all(w > 0 and h > 0 for w, h in images), images
    _not_blank(shot)
    _not_blank(img_shot)
