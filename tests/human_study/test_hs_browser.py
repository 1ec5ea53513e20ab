"""End to end in headless Debian Chromium (Playwright) against ``python -m human_study serve`` on 127.0.0.1.

Skips only when ``/usr/bin/chromium`` is absent and ``CI`` is unset; in CI a missing browser is a failure.
Checks: a full session from a signed link (consent, a reload, a double click, a failed submit) with both videos
playing (``currentTime`` advancing) on every item, the layout at 1366x768, votes in the database, and no model name
or server path in any URL, HTTP body, WebSocket frame or page source; unsigned, tampered and repeated links are
refused; a video deleted while serving is skipped without a trace of it in the browser; open enrolment from a
Prolific-style link ends with the completion redirect; ``serve`` refuses a study whose video has a leaking title.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from hs_helpers import MODEL_NAMES, make_tagged_video, write_study

from human_study.blinding import find_leaks
from human_study.config import DEFAULT_CRITERIA, load_study
from human_study.links import rater_link
from human_study.store import VoteStore

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CRITERIA = tuple(c.id for c in DEFAULT_CRITERIA)  # all four questions: the layout must hold with them
LABELS = {"left": "Left is better", "tie": "No preference", "right": "Right is better"}
FRAMES = 48  # 6 s videos at 8 fps: long enough to see currentTime advance before a loop wraps
VIEWPORT = {"width": 1366, "height": 768}

pytestmark = pytest.mark.browser


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing in CI: scripts/install.sh --test must `apt-get install -y chromium`")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(study: Path, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in {"HUMAN_STUDY_FILE", "HUMAN_STUDY_DB_URL"}}
    return subprocess.Popen([sys.executable, "-m", "human_study", "serve", "--study", str(study), "--address",
                             "127.0.0.1", "--port", str(port)], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env=env, cwd=ROOT)


@contextlib.contextmanager
def serving(study: Path) -> Iterator[str]:
    """``python -m human_study serve`` on a free loopback port; yields the base URL; stops the server after."""
    port = _free_port()
    log = study.parent / "serve.log"
    proc = _serve(study, port, log)
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
                raise RuntimeError("serve did not start:\n" + log.read_text())
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def browser():
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Traffic:
    """Everything a page received or sent: request URLs, WebSocket frames, HTTP bodies (not video bytes)."""

    def __init__(self, page):  # noqa: ANN001 - playwright Page
        self.seen: list[bytes] = []
        self.responses = []
        page.on("request", lambda req: self.seen.append(req.url.encode()))
        page.on("response", lambda r: self.responses.append(r))
        page.on("websocket", self._ws)

    def _ws(self, ws) -> None:  # noqa: ANN001
        self.seen.append(ws.url.encode())
        ws.on("framereceived", lambda f: self.seen.append(f if isinstance(f, bytes) else f.encode()))
        ws.on("framesent", lambda f: self.seen.append(f if isinstance(f, bytes) else f.encode()))

    def bodies(self) -> list[bytes]:
        out = []
        for r in self.responses:
            if "/media/" in r.url:
                continue  # video bytes (content-hash URLs, checked separately)
            with contextlib.suppress(Exception):  # redirects and evicted bodies have none
                out.append(r.body())
        return out

    def assert_clean(self, page, forbidden, http_bodies: bool = True) -> None:  # noqa: ANN001
        """No ``forbidden`` string in the page source, the player's document, the WebSocket frames and request
        URLs, and (``http_bodies``) any HTTP body — off for words Streamlit's own JS bundle contains."""
        blobs = [page.content().encode(), *self.seen, *(self.bodies() if http_bodies else [])]
        for frame in page.frames:  # the player's iframe document too
            with contextlib.suppress(Exception):
                blobs.append(frame.content().encode())
        for blob in blobs:
            assert not find_leaks(blob, forbidden), find_leaks(blob, forbidden)


def _wait_idle(page) -> None:  # noqa: ANN001
    page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(timeout=30_000)


def _player(page):  # noqa: ANN001
    handle = page.locator("iframe[data-testid='stIFrame']").element_handle(timeout=30_000)
    return handle.content_frame()


_SAMPLE = """async () => {
  const vs = [...document.querySelectorAll('video')];
  const t0 = vs.map(v => v.currentTime);
  await new Promise(r => setTimeout(r, 600));
  return {t0, t1: vs.map(v => v.currentTime), paused: vs.map(v => v.paused), muted: vs.map(v => v.muted),
          loop: vs.map(v => v.loop), duration: vs.map(v => v.duration), src: vs.map(v => v.currentSrc)};
}"""


def assert_both_playing(page) -> dict:  # noqa: ANN001
    """Both videos of the current item are muted, looping and advancing (``currentTime`` grows), started together."""
    frame = _player(page)
    frame.wait_for_function("() => document.querySelectorAll('video').length === 2", timeout=30_000)
    frame.wait_for_function("() => [...document.querySelectorAll('video')].every(v => v.readyState >= 2)",
                            timeout=30_000)
    for _attempt in range(5):  # a loop wrapping between the two samples is retried
        s = frame.evaluate(_SAMPLE)
        if all(t1 > t0 for t0, t1 in zip(s["t0"], s["t1"])):
            break
    assert len(s["t0"]) == 2 and all(t1 > t0 for t0, t1 in zip(s["t0"], s["t1"])), s
    assert not any(s["paused"]) and all(s["muted"]) and all(s["loop"]), s
    if abs(s["duration"][0] - s["duration"][1]) < 1e-3 and max(s["t1"]) < s["duration"][0] - 0.5:
        assert abs(s["t1"][0] - s["t1"][1]) < 0.5, s  # started together
    assert all("/media/" in src for src in s["src"])
    return s


def _answer(page, answer: str, n_criteria: int = len(CRITERIA)) -> None:  # noqa: ANN001
    radios = page.get_by_test_id("stRadio")
    for i in range(n_criteria):
        radios.nth(i).get_by_text(LABELS[answer], exact=True).click()


def _submit(page, double: bool = False) -> None:  # noqa: ANN001
    button = page.get_by_test_id("stFormSubmitButton").get_by_role("button")
    button.dblclick() if double else button.click()


def _consent(page) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    expect(page.get_by_role("button", name="Start")).to_be_visible(timeout=60_000)
    page.get_by_text("I have read the above and agree to take part.").click()
    page.get_by_role("button", name="Start").click()


def _link(study_path: Path, base: str, rater: str) -> str:
    study = load_study(study_path)
    return rater_link(base, VoteStore.open(study).link_secret, study.name, rater)


def assert_layout(page, shot: Path) -> None:  # noqa: ANN001
    """At 1366x768 the questions and the submit button sit beside the videos, all inside the first screen."""
    page.screenshot(path=str(shot))
    assert page.evaluate("() => window.scrollY") == 0
    player = page.locator("iframe[data-testid='stIFrame']").bounding_box()
    submit = page.get_by_test_id("stFormSubmitButton").bounding_box()
    radios = page.get_by_test_id("stRadio")
    boxes = [radios.nth(i).bounding_box() for i in range(radios.count())] + [submit]
    assert player["y"] + player["height"] <= VIEWPORT["height"], player
    for box in boxes:
        assert box["x"] >= player["x"] + player["width"], (box, player)  # beside, not below
        assert box["y"] + box["height"] <= VIEWPORT["height"], box  # no scrolling needed
    assert player["width"] >= 500  # the videos are not squeezed


def test_rater_session_in_chromium(tmp_path: Path, browser):
    from playwright.sync_api import expect

    study_path = write_study(tmp_path, n_prompts=4, quota=4, repeats=1, n_gold=1, criteria=CRITERIA, frames=FRAMES)
    with serving(study_path) as base:
        page = browser.new_page(viewport=VIEWPORT)
        traffic = Traffic(page)
        page.goto(_link(study_path, base, "e2e1"))
        _consent(page)
        answers = ["left", "right", "tie", "left", "right", "left"]
        for k, answer in enumerate(answers):
            expect(page.get_by_text(f"Comparison {k + 1} of 6")).to_be_visible(timeout=30_000)
            _wait_idle(page)
            assert_both_playing(page)  # on every item
            if k == 0:
                assert_layout(page, tmp_path / "item_1366x768.png")
                _submit(page)  # a failed submit (nothing answered): both videos keep playing
                expect(page.get_by_text("Please answer every question")).to_be_visible(timeout=30_000)
                _wait_idle(page)
                assert_both_playing(page)
                _player(page).get_by_role("button", name="Replay both").click()
                assert _player(page).evaluate("() => Math.max(...[...document.querySelectorAll('video')]"
                                              ".map(v => v.currentTime))") < 0.5
                assert_both_playing(page)
            if k == 2:  # a refresh resumes at the same item, playing
                page.reload()
                expect(page.get_by_text("Comparison 3 of 6")).to_be_visible(timeout=30_000)
                _wait_idle(page)
                assert_both_playing(page)
            _answer(page, answer)
            _submit(page, double=(k == 3))
        expect(page.get_by_text("You have completed all 6 comparisons")).to_be_visible(timeout=30_000)
        traffic.assert_clean(page, MODEL_NAMES)
        traffic.assert_clean(page, ("videos/", "gold/", "study.yaml", str(tmp_path)))  # no server-side paths

    votes = VoteStore.open(load_study(study_path)).votes_frame()
    assert len(votes) == 6 * len(CRITERIA)
    assert not votes.duplicated(["rater", "item", "criterion"]).any()
    assert set(votes["rater"]) == {"e2e1"}
    sides = votes.sort_values("position").drop_duplicates("item")["chosen_side"].tolist()
    assert sides == [{"left": "left", "right": "right", "tie": "none"}[a] for a in answers]
    assert any(b"Left is better" in blob for blob in traffic.seen)  # the WebSocket frames were inspected


def test_unsigned_tampered_and_repeated_links_are_refused(tmp_path: Path, browser):
    from playwright.sync_api import expect

    study_path = write_study(tmp_path, n_prompts=2, quota=2, repeats=0, n_gold=0)
    with serving(study_path) as base:
        good = _link(study_path, base, "e2e1")
        sig = good.split("sig=")[1]
        page = browser.new_page()
        for url in (f"{base}/?rater=e2e1",                          # unsigned: the bare id
                    good[:-1] + ("0" if good[-1] != "0" else "1"),  # tampered signature
                    f"{base}/?rater=bob&sig={sig}",                  # someone else's signature
                    f"{good}&rater=bob",                             # a second rater= must not switch identity
                    f"{base}/"):                                     # no token at all
            page.goto(url)
            expect(page.get_by_test_id("stAlertContentError")).to_be_visible(timeout=60_000)
            _wait_idle(page)
            assert page.get_by_test_id("stRadio").count() == 0 and page.get_by_test_id("stCheckbox").count() == 0
        page.goto(good)  # the real link works
        expect(page.get_by_role("button", name="Start")).to_be_visible(timeout=60_000)
    assert list(VoteStore.open(load_study(study_path)).rater_progress()["rater"]) == ["e2e1"]


def test_missing_video_is_skipped_without_a_trace(tmp_path: Path, browser):
    from playwright.sync_api import expect

    study_path = write_study(tmp_path, n_prompts=4, quota=4, repeats=0, n_gold=0, criteria=CRITERIA[:2],
                             frames=FRAMES)
    with serving(study_path) as base:
        study = load_study(study_path)
        store = VoteStore.open(study)
        store.register_rater("e2e2")  # the same registration the app would do: we need the plan first
        upcoming = store.item(store.plan("e2e2")[1].item_id)
        victim = study.model(upcoming.model_a).videos[upcoming.prompt_id]
        page = browser.new_page(viewport=VIEWPORT)
        traffic = Traffic(page)
        page.goto(_link(study_path, base, "e2e2"))
        _consent(page)
        expect(page.get_by_text("Comparison 1 of 4")).to_be_visible(timeout=30_000)
        _wait_idle(page)
        victim.unlink()  # deleted while serving
        _answer(page, "left", 2)
        _submit(page)
        expect(page.get_by_text("Comparison 2 of 3")).to_be_visible(timeout=30_000)  # the rater goes on
        expect(page.get_by_text("could not be loaded and was skipped")).to_be_visible()
        _wait_idle(page)
        assert_both_playing(page)
        page.reload()  # not stuck on the broken item after a reload either
        expect(page.get_by_text("Comparison 2 of 3")).to_be_visible(timeout=30_000)
        _wait_idle(page)
        traffic.assert_clean(page, MODEL_NAMES + (str(victim), victim.name, str(tmp_path), "videos/"))
        traffic.assert_clean(page, ("FileNotFoundError", "Traceback", "No such file", "Errno"), http_bodies=False)
    problems = VoteStore.open(study).problems_frame()
    assert len(problems) == 1 and problems.loc[0, "item"] == upcoming.id and str(victim) in problems.loc[0, "reason"]


def test_crowd_platform_entry_ends_with_the_completion_redirect(tmp_path: Path, browser):
    from playwright.sync_api import expect

    done_url = "https://platform.example/submissions/complete?cc=C0MPL3TE"
    study_path = write_study(tmp_path, n_prompts=2, quota=2, repeats=0, n_gold=0, criteria=CRITERIA[:1],
                             extra={"raters": {"enrolment": "open"},
                                    "completion": {"code": "C0MPL3TE", "url": done_url}})
    with serving(study_path) as base:
        page = browser.new_page()
        # the platform's page is faked inside the browser: nothing leaves 127.0.0.1
        page.route("https://platform.example/**", lambda route: route.fulfill(body="<p>platform: completed</p>",
                                                                             content_type="text/html"))
        page.goto(f"{base}/?PROLIFIC_PID=5f0c0ffee0000000000000bb&STUDY_ID=st7&SESSION_ID=se7")
        _consent(page)
        expect(page.get_by_text("Comparison 1 of 2")).to_be_visible(timeout=30_000)
        assert "rater=o" in page.url and "sig=" in page.url and "PROLIFIC_PID" not in page.url
        page.reload()  # the signed link the server put in the address bar resumes
        expect(page.get_by_text("Comparison 1 of 2")).to_be_visible(timeout=30_000)
        for k in range(2):
            expect(page.get_by_text(f"Comparison {k + 1} of 2")).to_be_visible(timeout=30_000)
            _wait_idle(page)
            _answer(page, "tie", 1)
            _submit(page)
        expect(page.get_by_text("C0MPL3TE").first).to_be_visible(timeout=30_000)
        page.wait_for_url(done_url, timeout=30_000)
        assert "platform: completed" in page.content()
    progress = VoteStore.open(load_study(study_path)).rater_progress()
    assert list(progress["participant_id"]) == ["5f0c0ffee0000000000000bb"]
    assert list(progress["platform_session_id"]) == ["se7"] and list(progress["answered"]) == [2]


def test_serve_refuses_a_study_whose_video_names_the_model(tmp_path: Path, browser):
    from playwright.sync_api import Error

    study_path = write_study(tmp_path, n_prompts=2, quota=2, repeats=0, n_gold=0)
    make_tagged_video(load_study(study_path).models[0].videos["p0"], container_tags={"title": f"{MODEL_NAMES[0]} 0"})
    port = _free_port()
    log = tmp_path / "serve.log"
    proc = _serve(study_path, port, log)
    assert proc.wait(timeout=120) == 1
    out = log.read_text()
    assert "metadata tag 'container title'" in out and "not serving a study with problems" in out
    page = browser.new_page()
    with pytest.raises(Error, match="ERR_CONNECTION_REFUSED"):  # nothing was served
        page.goto(f"http://127.0.0.1:{port}/", timeout=10_000)
