"""What ``validate`` reports and ``serve`` refuses to start with (problems): missing or unreadable videos, model
names in rater-facing texts or in video metadata. Warnings do not block: file names that name a model (the app
never sends a file name or path to the browser) and a quota above the number of items (it is capped)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .blinding import file_name_leaks, mime_type, study_text_leaks, video_metadata_leaks
from .config import Study, file_problems


@dataclass
class StudyReport:
    """``problems`` block serving; ``warnings`` do not."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    n_videos: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def study_videos(study: Study) -> list[tuple[str, Path]]:
    """``(what, path)`` for every video a rater may be shown (model videos of the study's prompts, gold videos)."""
    videos = [(f"model {m.name!r}, prompt {pid!r}", m.videos[pid])
              for m in study.models for pid in (p.id for p in study.prompts) if pid in m.videos]
    videos += [(f"gold item {g.id!r} video {side}", path)
               for g in study.gold for side, path in (("a", g.video_a), ("b", g.video_b))]
    return videos


def check_study(study: Study) -> StudyReport:
    """Every check of ``python -m human_study validate`` (reads each video's metadata once)."""
    report = StudyReport(problems=file_problems(study) + study_text_leaks(study))
    names = study.model_names
    for what, path in study_videos(study):
        if not path.is_file():
            continue  # reported by file_problems
        report.n_videos += 1
        try:
            mime_type(path)
            leaks = video_metadata_leaks(path, names)
        except Exception as exc:  # noqa: BLE001 - FFmpeg raises many types for a broken file; report, don't crash
            report.problems.append(f"{what}: {path} is not a readable video ({type(exc).__name__}: {exc})")
            continue
        report.problems += [f"{path} ({what}) contains the model name {name!r} in its metadata tag '{tag}' "
                            "(blinding: the browser can read it)" for tag, name in leaks]
        report.warnings += [f"{path} ({what}): the file name names the model {name!r} (never sent to raters; "
                            "rename it if the files are shared)" for name in file_name_leaks(path, names)]
    n_core = len(study.prompts) * len(study.models) * (len(study.models) - 1) // 2
    if study.quota > n_core:
        report.warnings.append(f"quota {study.quota} exceeds the {n_core} prompt x pair items (raters get {n_core})")
    return report
