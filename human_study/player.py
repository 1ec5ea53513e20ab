"""The two-video player: both videos in one document, muted, looped, started together, with "Replay both".

``st.video`` gives each video its own element and its own autoplay, so one can start late or stay paused at 0:00
(autoplay raced the element's mount), and both restart paused when a rerun re-creates them. This player is one
HTML document (rendered by ``st.iframe``), so its script controls both videos: it waits until both can play,
starts them at 0 together, and a watchdog resumes a video the browser paused (e.g. after the iframe was
re-attached). "Replay both" restarts both at 0. Nothing here names a model: the sources are Streamlit media URLs
(content hashes) and the labels are "Left video" / "Right video".
"""

from __future__ import annotations

import html

#: Largest height in CSS pixels of a video box (portrait videos are letterboxed inside, ``object-fit: contain``).
MAX_VIDEO_HEIGHT = 420

_TEMPLATE = """<!doctype html>
<html><head><meta charset="utf-8"><style>
  body {{ margin: 0; font-family: "Source Sans", "Source Sans Pro", sans-serif; color: #31333f; }}
  .pair {{ display: flex; gap: 12px; }}
  figure {{ flex: 1 1 0; margin: 0; min-width: 0; }}
  figcaption {{ font-weight: 600; margin: 0 0 4px 0; }}
  video {{ display: block; width: 100%; aspect-ratio: 16 / 9; max-height: {max_height}px; background: #000;
           object-fit: contain; }}
  button {{ margin-top: 8px; padding: 4px 14px; font-size: 15px; border: 1px solid #c7c9d1; border-radius: 8px;
            background: #fff; cursor: pointer; }}
</style></head><body>
<div class="pair">{figures}</div>
<button id="replay" type="button">&#x21bb; Replay both</button>
<script>
(function () {{
  var videos = Array.prototype.slice.call(document.querySelectorAll("video"));
  var started = false;
  videos.forEach(function (v) {{ v.muted = true; v.defaultMuted = true; v.loop = true; }});
  function play(v) {{ var p = v.play(); if (p && p.catch) {{ p.catch(function () {{}}); }} }}
  function restart() {{ videos.forEach(function (v) {{ v.currentTime = 0; }}); videos.forEach(play); }}
  // Start both together once both have data to play (readyState >= HAVE_FUTURE_DATA).
  function maybeStart() {{
    if (!started && videos.every(function (v) {{ return v.readyState >= 3; }})) {{ started = true; restart(); }}
  }}
  // Both boxes take the shape of the taller video once its size is known (st.iframe re-measures the height).
  function fitBoxes() {{
    var ratios = videos.filter(function (v) {{ return v.videoWidth > 0; }})
                       .map(function (v) {{ return v.videoWidth / v.videoHeight; }});
    if (ratios.length) {{
      var r = Math.min.apply(null, ratios);
      videos.forEach(function (v) {{ v.style.aspectRatio = String(r); }});
    }}
  }}
  videos.forEach(function (v) {{
    v.addEventListener("loadedmetadata", fitBoxes);
    v.addEventListener("canplay", maybeStart);
    v.addEventListener("loadeddata", maybeStart);
  }});
  maybeStart();
  // Watchdog: the browser pauses media it considers hidden or re-attached; keep both running.
  setInterval(function () {{
    if (!started) {{ maybeStart(); return; }}
    if (document.hidden) {{ return; }}
    videos.forEach(function (v) {{ if (v.paused) {{ play(v); }} }});
  }}, 400);
  document.getElementById("replay").addEventListener("click", restart);
}})();
</script>
</body></html>
"""

_FIGURE = ('<figure><figcaption>{label}</figcaption><video src="{src}" muted autoplay loop playsinline '
           'preload="auto" aria-label="{label}"></video></figure>')


def player_html(left_url: str, right_url: str, labels: tuple[str, str] = ("Left video", "Right video"),
                max_height: int = MAX_VIDEO_HEIGHT) -> str:
    """The player document for two video URLs (left, right)."""
    figures = "".join(_FIGURE.format(label=html.escape(label), src=html.escape(url, quote=True))
                      for url, label in zip((left_url, right_url), labels))
    return _TEMPLATE.format(figures=figures, max_height=int(max_height))
