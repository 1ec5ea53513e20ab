"""End to end in headless Debian Chromium (Playwright): a rater session against a real Streamlit server.

Skips only when ``/usr/bin/chromium`` is absent and ``CI`` is unset; in CI a missing browser is a failure.
Checks: consent, votes through to the done page (with a page reload and a double click on the way), the WebM
videos decode, the votes are in the database, and no model name appears in any URL, HTTP body, WebSocket
frame or the final page source.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from hs_helpers import MODEL_NAMES, write_study

from human_study.blinding import find_leaks
from human_study.config import load_study
from human_study.store import VoteStore

CHROMIUM = Path("/usr/bin/chromium")
APP = Path(__file__).resolve().parents[2] / "human_study" / "app.py"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CRITERIA = ("visual_quality", "overall")
LABELS = {"left": "Left is better", "tie": "No preference", "right": "Right is better"}

pytestmark = pytest.mark.browser


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run must `apt-get install -y chromium`")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path):
    """A Streamlit server for a 6-item study on a free localhost port; yields (base URL, study path)."""
    _require_chromium()
    study = write_study(tmp_path, n_prompts=4, quota=4, repeats=1, n_gold=1, criteria=CRITERIA)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"HUMAN_STUDY_FILE", "HUMAN_STUDY_DB_URL"}}
    log = (tmp_path / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none", "--", "--study", str(study)],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("streamlit did not start:\n" + (tmp_path / "streamlit.log").read_text())
            time.sleep(0.3)
        yield base, study
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_idle(page) -> None:  # noqa: ANN001 - playwright Page
    page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(timeout=30_000)


def _answer_and_submit(page, answer: str, double: bool = False) -> None:  # noqa: ANN001
    radios = page.get_by_test_id("stRadio")
    for i in range(len(CRITERIA)):
        radios.nth(i).get_by_text(LABELS[answer], exact=True).click()
    button = page.get_by_test_id("stFormSubmitButton").get_by_role("button")
    if double:
        button.dblclick()
    else:
        button.click()


def test_rater_session_in_chromium(server):
    from playwright.sync_api import expect, sync_playwright

    base, study_path = server
    seen: list[bytes] = []
    responses = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda req: seen.append(req.url.encode()))
            page.on("response", lambda r: responses.append(r))
            page.on("websocket", lambda ws: (seen.append(ws.url.encode()),
                                             ws.on("framereceived", lambda f: seen.append(
                                                 f if isinstance(f, bytes) else f.encode())),
                                             ws.on("framesent", lambda f: seen.append(
                                                 f if isinstance(f, bytes) else f.encode()))))
            page.goto(f"{base}/?rater=e2e1")
            expect(page.get_by_role("button", name="Start")).to_be_visible(timeout=60_000)
            page.get_by_text("I have read the above and agree to take part.").click()
            page.get_by_role("button", name="Start").click()

            answers = ["left", "right", "tie", "left", "right", "left"]
            for k, answer in enumerate(answers):
                expect(page.get_by_text(f"Comparison {k + 1} of 6")).to_be_visible(timeout=30_000)
                _wait_idle(page)
                expect(page.get_by_test_id("stVideo")).to_have_count(2)
                if k == 0:  # the WebM fixtures decode in Chromium
                    page.wait_for_function(
                        "() => [...document.querySelectorAll('video')].every(v => v.readyState >= 1)",
                        timeout=30_000)
                    srcs = page.eval_on_selector_all("video", "vs => vs.map(v => v.currentSrc)")
                    assert len(srcs) == 2 and all("/media/" in s for s in srcs)
                if k == 2:  # a refresh resumes at the same item
                    page.reload()
                    expect(page.get_by_text("Comparison 3 of 6")).to_be_visible(timeout=30_000)
                    _wait_idle(page)
                _answer_and_submit(page, answer, double=(k == 3))
            expect(page.get_by_text("You have completed all 6 comparisons")).to_be_visible(timeout=30_000)
            html = page.content()
            bodies = []
            for r in responses:
                if "/media/" in r.url:
                    continue  # video bytes (checked by content hash URL above)
                try:
                    bodies.append(r.body())
                except Exception:  # noqa: BLE001 - redirects and evicted bodies have none
                    pass
        finally:
            browser.close()

    store = VoteStore.open(load_study(study_path))
    votes = store.votes_frame()
    assert len(votes) == 6 * len(CRITERIA)
    assert not votes.duplicated(["rater", "item", "criterion"]).any()
    assert set(votes["rater"]) == {"e2e1"}
    sides = votes.sort_values("position").drop_duplicates("item")["chosen_side"].tolist()
    assert sides == [{"left": "left", "right": "right", "tie": "none"}[a] for a in answers]

    assert bodies and any(b"Left is better" in blob for blob in seen)  # the WebSocket frames were inspected
    for blob in [html.encode(), *seen, *bodies]:
        assert not find_leaks(blob, MODEL_NAMES)
    assert not find_leaks(b"".join(seen), ["videos/", "gold/", "study.yaml"])  # no server-side file paths
