"""The study file: models, prompts, criteria, options, quota, gold items, repeats, exclusion rule, storage.

A study file is YAML (``.yaml``/``.yml``), TOML (``.toml``) or JSON (``.json``); the loaders are a registry keyed by
extension (:data:`LOADERS`). Relative paths inside the file are resolved against the file's folder. Example::

    name: rehyat-vs-wan
    seed: 0
    models:
      - {name: rehyat, folder: videos/rehyat}        # <folder>/<prompt_id>.<mp4|webm|...>
      - {name: wan2.1, manifest: wan.csv}            # CSV prompt_id,path  or JSON {prompt_id: path}
    prompts: prompts.txt                             # or a list of {id, text}; .txt = one prompt per line
    criteria: [visual_quality, motion_quality, prompt_alignment, overall]   # ids, or {id, label, question}
    options: {left: Left is better, tie: No preference, right: Right is better}
    quota: 20                                        # core comparisons per rater
    repeats: 2                                       # core items shown again later with sides swapped
    gold:                                            # attention / gold items with a known answer
      - {id: g1, prompt: "A red ball", video_a: gold/good.webm, video_b: gold/broken.webm, answer: a}
    exclusion: {min_gold_accuracy: 0.75}
    storage: {url: sqlite:///votes.sqlite}
    admin_password_env: HUMAN_STUDY_ADMIN_PASSWORD

See ``docs/human_study.md`` for every field.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

VIDEO_EXTENSIONS = (".webm", ".mp4", ".ogv", ".ogg", ".mov", ".mkv")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _load_yaml(text: str) -> Any:
    return yaml.safe_load(text)


def _load_toml(text: str) -> Any:
    try:
        import tomllib  # Python >= 3.11
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib.loads(text)


def _load_json(text: str) -> Any:
    return json.loads(text)


def _dump_yaml(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _dump_json(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


#: Study-file readers by extension.
LOADERS: dict[str, Callable[[str], Any]] = {
    ".yaml": _load_yaml,
    ".yml": _load_yaml,
    ".toml": _load_toml,
    ".json": _load_json,
}

#: Study-file writers by extension (TOML is read-only: the standard library has no writer).
DUMPERS: dict[str, Callable[[dict], str]] = {".yaml": _dump_yaml, ".yml": _dump_yaml, ".json": _dump_json}


class StudyError(ValueError):
    """A study file that cannot be used as written."""


@dataclass(frozen=True)
class Criterion:
    """One question asked about every pair."""

    id: str
    label: str
    question: str


#: The default criteria (visual quality, motion quality, prompt alignment, overall).
DEFAULT_CRITERIA: tuple[Criterion, ...] = (
    Criterion("visual_quality", "Visual quality", "Which video looks better frame by frame (sharpness, artifacts, colour)?"),
    Criterion("motion_quality", "Motion quality", "Which video moves more naturally and smoothly?"),
    Criterion("prompt_alignment", "Prompt alignment", "Which video matches the prompt better?"),
    Criterion("overall", "Overall", "Which video do you prefer overall?"),
)
_DEFAULT_BY_ID = {c.id: c for c in DEFAULT_CRITERIA}


@dataclass(frozen=True)
class Options:
    """Labels of the three answers; the semantics (left / tie / right) are fixed."""

    left: str = "Left is better"
    tie: str = "No preference"
    right: str = "Right is better"

    def labels(self) -> dict[str, str]:
        """Answer code (``left``/``tie``/``right``) -> label shown to the rater."""
        return {"left": self.left, "tie": self.tie, "right": self.right}


@dataclass(frozen=True)
class Model:
    """A model's videos: ``videos[prompt_id] = path``."""

    name: str
    videos: dict[str, Path]


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str


@dataclass(frozen=True)
class GoldItem:
    """A pair with a known answer (``a``, ``b`` or ``tie``) for the listed criteria (all when empty)."""

    id: str
    prompt: str
    video_a: Path
    video_b: Path
    answer: str
    criteria: tuple[str, ...] = ()


@dataclass(frozen=True)
class Exclusion:
    """Pre-registered rater-exclusion rule; ``None`` disables a check (see :mod:`human_study.stats.quality`)."""

    min_gold_accuracy: float | None = 0.75
    min_repeat_consistency: float | None = None
    min_median_dwell_s: float | None = None


@dataclass(frozen=True)
class Study:
    """A parsed, path-resolved study file."""

    name: str
    models: tuple[Model, ...]
    prompts: tuple[Prompt, ...]
    criteria: tuple[Criterion, ...] = DEFAULT_CRITERIA
    options: Options = field(default_factory=Options)
    quota: int = 20
    repeats: int = 0
    gold: tuple[GoldItem, ...] = ()
    exclusion: Exclusion = field(default_factory=Exclusion)
    seed: int = 0
    storage_url: str = ""
    admin_password_env: str = "HUMAN_STUDY_ADMIN_PASSWORD"
    tokens: tuple[str, ...] | None = None
    title: str = "Video preference study"
    instructions: str = (
        "You will see pairs of short videos generated from the same text prompt. Watch both videos, then answer each "
        "question. Choose the middle option when you have no preference. There are no right or wrong answers, but some "
        "pairs check attention."
    )
    consent: str = (
        "Your answers are stored with an anonymous rater token and used only to compare video-generation methods. "
        "You may stop at any time; you can resume later from the same link."
    )
    min_view_seconds: float = 0.0
    path: Path | None = None

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    @property
    def criterion_ids(self) -> list[str]:
        return [c.id for c in self.criteria]

    def prompt_text(self, prompt_id: str) -> str:
        return {p.id: p.text for p in self.prompts}.get(prompt_id, prompt_id)

    def model(self, name: str) -> Model:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def token_allowed(self, token: str) -> bool:
        """A token is valid when it is well-formed and, if the study lists tokens, one of them."""
        return bool(TOKEN_RE.match(token or "")) and (self.tokens is None or token in self.tokens)


# ---------------------------------------------------------------------------------------------------------------- parsing


def _read_prompts(spec: Any, base: Path) -> tuple[Prompt, ...]:
    if spec is None:
        return ()
    if isinstance(spec, str):
        path = _resolve(spec, base)
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            return _read_prompts(json.loads(text), base)
        if path.suffix == ".csv":
            rows = list(csv.DictReader(text.splitlines()))
            return tuple(Prompt(str(r["id"]), str(r.get("text") or r["id"])) for r in rows)
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return tuple(Prompt(f"p{i + 1:03d}", ln) for i, ln in enumerate(lines))
    if isinstance(spec, dict):
        return tuple(Prompt(str(k), str(v)) for k, v in spec.items())
    prompts = []
    for i, p in enumerate(spec):
        if isinstance(p, str):
            prompts.append(Prompt(f"p{i + 1:03d}", p))
        else:
            prompts.append(Prompt(str(p["id"]), str(p.get("text", p["id"]))))
    return tuple(prompts)


def _resolve(p: str | os.PathLike, base: Path) -> Path:
    path = Path(os.path.expanduser(str(p)))
    return path if path.is_absolute() else (base / path)


def folder_videos(folder: Path) -> dict[str, Path]:
    """``{file stem: path}`` for every video file directly inside ``folder``."""
    return {
        f.stem: f
        for f in sorted(folder.iterdir())
        if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS
    }


def _read_manifest(path: Path) -> dict[str, Path]:
    base = path.parent
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, list):
            data = {str(r["prompt_id"]): r["path"] for r in data}
        return {str(k): _resolve(v, base) for k, v in data.items()}
    with path.open(encoding="utf-8", newline="") as fh:
        return {str(r["prompt_id"]): _resolve(r["path"], base) for r in csv.DictReader(fh)}


def _read_model(spec: dict, base: Path) -> Model:
    name = str(spec["name"])
    if "folder" in spec:
        videos = folder_videos(_resolve(spec["folder"], base))
    elif "manifest" in spec:
        videos = _read_manifest(_resolve(spec["manifest"], base))
    elif "videos" in spec:
        videos = {str(k): _resolve(v, base) for k, v in spec["videos"].items()}
    else:
        raise StudyError(f"model {name!r} needs 'folder', 'manifest' or 'videos'")
    return Model(name, videos)


def _read_criterion(spec: Any) -> Criterion:
    if isinstance(spec, str):
        if spec in _DEFAULT_BY_ID:
            return _DEFAULT_BY_ID[spec]
        return Criterion(spec, spec.replace("_", " ").capitalize(), f"Which video is better: {spec.replace('_', ' ')}?")
    cid = str(spec["id"])
    default = _DEFAULT_BY_ID.get(cid)
    label = spec.get("label") or (default.label if default else cid.replace("_", " ").capitalize())
    question = spec.get("question") or (default.question if default else f"Which video is better: {label.lower()}?")
    return Criterion(cid, str(label), str(question))


def _read_gold(spec: dict, base: Path) -> GoldItem:
    answer = str(spec["answer"]).lower()
    if answer not in {"a", "b", "tie"}:
        raise StudyError(f"gold item {spec.get('id')!r}: answer must be a, b or tie, not {answer!r}")
    return GoldItem(
        id=str(spec["id"]),
        prompt=str(spec.get("prompt", "")),
        video_a=_resolve(spec["video_a"], base),
        video_b=_resolve(spec["video_b"], base),
        answer=answer,
        criteria=tuple(str(c) for c in spec.get("criteria", ()) or ()),
    )


def default_storage_url(study_path: Path | None, name: str) -> str:
    """``sqlite:///<study folder>/<name>.votes.sqlite``."""
    folder = study_path.parent if study_path else Path.cwd()
    return f"sqlite:///{(folder / f'{name}.votes.sqlite').resolve()}"


def _resolve_url(url: str, base: Path) -> str:
    """Make a relative SQLite path absolute (relative to the study file); other URLs pass unchanged."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
        return prefix + str(_resolve(url[len(prefix):], base).resolve())
    return url


def study_from_dict(data: dict, path: Path | None = None) -> Study:
    """Build a :class:`Study` from the parsed file content; raise :class:`StudyError` when it is unusable."""
    base = path.parent if path else Path.cwd()
    try:
        name = str(data["name"])
        models = tuple(_read_model(m, base) for m in data["models"])
    except KeyError as exc:
        raise StudyError(f"study file is missing {exc}") from exc
    prompts = _read_prompts(data.get("prompts"), base)
    if not prompts:  # default: the prompt ids every model has a video for
        common = set.intersection(*(set(m.videos) for m in models)) if models else set()
        prompts = tuple(Prompt(pid, pid) for pid in sorted(common))
    criteria = tuple(_read_criterion(c) for c in data.get("criteria") or [c.id for c in DEFAULT_CRITERIA])
    storage = data.get("storage") or {}
    url = os.environ.get("HUMAN_STUDY_DB_URL") or storage.get("url") or default_storage_url(path, name)
    tokens = (data.get("raters") or {}).get("tokens")
    kwargs = dict(
        name=name,
        models=models,
        prompts=prompts,
        criteria=criteria,
        options=Options(**(data.get("options") or {})),
        quota=int(data.get("quota", 20)),
        repeats=int(data.get("repeats", 0)),
        gold=tuple(_read_gold(g, base) for g in data.get("gold") or ()),
        exclusion=Exclusion(**(data.get("exclusion") or {})),
        seed=int(data.get("seed", 0)),
        storage_url=_resolve_url(url, base),
        admin_password_env=str(data.get("admin_password_env", "HUMAN_STUDY_ADMIN_PASSWORD")),
        tokens=tuple(str(t) for t in tokens) if tokens is not None else None,
        min_view_seconds=float(data.get("min_view_seconds", 0.0)),
        path=path,
    )
    for key in ("title", "instructions", "consent"):
        if key in data:
            kwargs[key] = str(data[key])
    study = Study(**kwargs)
    problems = structural_problems(study)
    if problems:
        raise StudyError("; ".join(problems))
    return study


def load_study(path: str | os.PathLike) -> Study:
    """Read and validate a study file (format chosen by extension, see :data:`LOADERS`)."""
    path = Path(path).resolve()
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise StudyError(f"unknown study file type {path.suffix!r}; use one of {sorted(LOADERS)}")
    data = loader(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise StudyError(f"{path}: the top level must be a mapping")
    return study_from_dict(data, path)


def structural_problems(study: Study) -> list[str]:
    """Problems that make a study unusable (duplicate names, fewer than two models, bad quota, ...)."""
    problems = []
    names = study.model_names
    if len(names) < 2:
        problems.append("a study needs at least two models")
    if len(set(names)) != len(names):
        problems.append(f"model names are not unique: {names}")
    ids = study.criterion_ids
    if not ids or len(set(ids)) != len(ids):
        problems.append(f"criteria must be non-empty and unique: {ids}")
    if study.quota < 1:
        problems.append("quota must be >= 1")
    if not 0 <= study.repeats <= study.quota:
        problems.append("repeats must be between 0 and quota")
    if not study.prompts:
        problems.append("no prompts (and no prompt id common to all models)")
    for g in study.gold:
        unknown = set(g.criteria) - set(ids)
        if unknown:
            problems.append(f"gold item {g.id!r} names unknown criteria {sorted(unknown)}")
    if len({g.id for g in study.gold}) != len(study.gold):
        problems.append("gold item ids are not unique")
    return problems


def file_problems(study: Study) -> list[str]:
    """Missing video files (every model needs a video for every prompt; gold items need both videos)."""
    problems = []
    for m in study.models:
        for p in study.prompts:
            v = m.videos.get(p.id)
            if v is None or not v.is_file():
                problems.append(f"model {m.name!r} has no video for prompt {p.id!r}")
    for g in study.gold:
        for v in (g.video_a, g.video_b):
            if not v.is_file():
                problems.append(f"gold item {g.id!r}: missing {v}")
    return problems


def study_to_dict(study: Study) -> dict:
    """The file form of a study (model videos written out explicitly, paths absolute)."""
    out: dict[str, Any] = {
        "name": study.name,
        "seed": study.seed,
        "title": study.title,
        "models": [{"name": m.name, "videos": {k: str(v) for k, v in m.videos.items()}} for m in study.models],
        "prompts": [{"id": p.id, "text": p.text} for p in study.prompts],
        "criteria": [asdict(c) for c in study.criteria],
        "options": asdict(study.options),
        "quota": study.quota,
        "repeats": study.repeats,
        "gold": [
            {"id": g.id, "prompt": g.prompt, "video_a": str(g.video_a), "video_b": str(g.video_b), "answer": g.answer,
             "criteria": list(g.criteria)}
            for g in study.gold
        ],
        "exclusion": asdict(study.exclusion),
        "storage": {"url": study.storage_url},
        "admin_password_env": study.admin_password_env,
        "min_view_seconds": study.min_view_seconds,
        "instructions": study.instructions,
        "consent": study.consent,
    }
    if study.tokens is not None:
        out["raters"] = {"tokens": list(study.tokens)}
    return out


def save_study(study_dict: dict, path: str | os.PathLike) -> Path:
    """Write a study mapping as YAML or JSON (by extension)."""
    path = Path(path)
    dumper = DUMPERS.get(path.suffix.lower())
    if dumper is None:
        raise StudyError(f"cannot write {path.suffix!r}; use one of {sorted(DUMPERS)}")
    path.write_text(dumper(study_dict), encoding="utf-8")
    return path
