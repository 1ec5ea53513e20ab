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
    storage: {url: sqlite:///votes.sqlite}            # or postgresql+psycopg://user@host/db
    admin_password_env: HUMAN_STUDY_ADMIN_PASSWORD
    raters: {enrolment: signed}                      # signed links (`links` command) or open (crowd platforms)
    completion: {code: C0DE, url: "https://app.prolific.com/submissions/complete?cc=C0DE"}

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


#: How raters get an identity: ``signed`` – only per-rater links signed by the server (``links`` command);
#: ``open`` – anyone with the study link enrols and the server assigns the id (crowd platforms).
ENROLMENTS = ("signed", "open")


@dataclass(frozen=True)
class PlatformParams:
    """Query parameters a crowd platform appends to the study link (defaults: Prolific's)."""

    participant: str = "PROLIFIC_PID"
    study: str = "STUDY_ID"
    session: str = "SESSION_ID"


@dataclass(frozen=True)
class Raters:
    """Rater identity: enrolment mode, optional fixed id list (signed links only), platform parameter names."""

    enrolment: str = "signed"
    tokens: tuple[str, ...] | None = None
    platform: PlatformParams = field(default_factory=PlatformParams)


@dataclass(frozen=True)
class Completion:
    """What the done page ends with: a completion code to show and/or a URL to redirect to."""

    code: str | None = None
    url: str | None = None


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
    raters: Raters = field(default_factory=Raters)
    completion: Completion = field(default_factory=Completion)
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

    @property
    def tokens(self) -> tuple[str, ...] | None:
        """The fixed list of rater ids (``raters.tokens``), ``None`` when any well-formed id may get a link."""
        return self.raters.tokens

    def token_allowed(self, token: str) -> bool:
        """A rater id is valid when it is well-formed and, if the study lists ids, one of them."""
        return bool(TOKEN_RE.match(token or "")) and (self.tokens is None or token in self.tokens)


# ---------------------------------------------------------------------------------------------------------------- parsing
# Every reader checks the shape of what it reads and raises StudyError naming the field, so a malformed study file
# is one clear message (the CLI prints it without a traceback), never a KeyError/TypeError from deep inside.

#: Top-level fields of a study file (unknown ones are an error: a typo would otherwise be silently ignored).
FIELDS = ("name", "models", "prompts", "criteria", "options", "quota", "repeats", "gold", "exclusion", "seed",
          "storage", "admin_password_env", "raters", "completion", "min_view_seconds", "title", "instructions",
          "consent")


def _type_name(types: type | tuple[type, ...]) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number",
             bool: "true/false", type(None): "empty"}
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(names.get(t, t.__name__) for t in types)


def _expect(value: Any, types: type | tuple[type, ...], where: str) -> Any:
    """``value`` if it has one of ``types`` (bools are not numbers here), else a :class:`StudyError`."""
    types_t = types if isinstance(types, tuple) else (types,)
    is_bool_as_number = isinstance(value, bool) and bool not in types_t
    if not isinstance(value, types_t) or is_bool_as_number:
        raise StudyError(f"{where} must be {_type_name(types)}, not {type(value).__name__} ({value!r:.60})")
    return value


def _number(value: Any, where: str, kind: type = float) -> Any:
    if kind is int:
        return _expect(value, int, where)
    return float(_expect(value, (int, float), where))


def _known_keys(spec: dict, allowed: tuple[str, ...] | set[str], where: str) -> None:
    unknown = sorted(set(map(str, spec)) - set(allowed))
    if unknown:
        raise StudyError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; known: {', '.join(allowed)}")


def _required(spec: dict, key: str, where: str) -> Any:
    if key not in spec or spec[key] is None:
        raise StudyError(f"{where} needs {key!r}")
    return spec[key]


def _resolve(p: str | os.PathLike, base: Path) -> Path:
    path = Path(os.path.expanduser(str(p)))
    return path if path.is_absolute() else (base / path)


def _read_text(path: Path, what: str) -> str:
    """A referenced file's text, or a StudyError saying which file is missing or unreadable."""
    if not path.is_file():
        raise StudyError(f"{what}: file not found: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyError(f"{what}: cannot read {path}: {exc}") from exc


def _read_prompts(spec: Any, base: Path) -> tuple[Prompt, ...]:
    if spec is None:
        return ()
    if isinstance(spec, str):
        path = _resolve(spec, base)
        text = _read_text(path, "prompts")
        if path.suffix == ".json":
            try:
                return _read_prompts(json.loads(text), base)
            except json.JSONDecodeError as exc:
                raise StudyError(f"prompts: {path} is not valid JSON: {exc}") from exc
        if path.suffix == ".csv":
            rows = list(csv.DictReader(text.splitlines()))
            if rows and "id" not in rows[0]:
                raise StudyError(f"prompts: {path} needs the columns id,text")
            return tuple(Prompt(str(r["id"]), str(r.get("text") or r["id"])) for r in rows)
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return tuple(Prompt(f"p{i + 1:03d}", ln) for i, ln in enumerate(lines))
    if isinstance(spec, dict):
        return tuple(Prompt(str(k), str(v)) for k, v in spec.items())
    prompts = []
    for i, p in enumerate(_expect(spec, list, "prompts")):
        if isinstance(p, (str, int, float)):
            prompts.append(Prompt(f"p{i + 1:03d}", str(p)))
        else:
            p = _expect(p, dict, f"prompts[{i}]")
            prompts.append(Prompt(str(_required(p, "id", f"prompts[{i}]")), str(p.get("text", p["id"]))))
    return tuple(prompts)


def folder_videos(folder: Path) -> dict[str, Path]:
    """``{file stem: path}`` for every video file directly inside ``folder``."""
    return {
        f.stem: f
        for f in sorted(folder.iterdir())
        if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS
    }


def _read_manifest(path: Path, where: str) -> dict[str, Path]:
    base = path.parent
    text = _read_text(path, where)
    try:
        if path.suffix == ".json":
            data = json.loads(text)
            if isinstance(data, list):
                data = {str(r["prompt_id"]): r["path"] for r in data}
            return {str(k): _resolve(v, base) for k, v in _expect(data, dict, where).items()}
        return {str(r["prompt_id"]): _resolve(r["path"], base) for r in csv.DictReader(text.splitlines())}
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise StudyError(f"{where}: {path} must be a CSV with columns prompt_id,path or a JSON "
                         f"{{prompt_id: path}} ({type(exc).__name__}: {exc})") from exc


def _read_model(spec: Any, base: Path, i: int) -> Model:
    where = f"models[{i}]"
    spec = _expect(spec, dict, where)
    _known_keys(spec, ("name", "folder", "manifest", "videos"), where)
    name = str(_required(spec, "name", where))
    where = f"model {name!r}"
    sources = [k for k in ("folder", "manifest", "videos") if k in spec]
    if len(sources) != 1:
        raise StudyError(f"{where} needs exactly one of 'folder', 'manifest' or 'videos'")
    if "folder" in spec:
        folder = _resolve(_expect(spec["folder"], str, f"{where}: folder"), base)
        if not folder.is_dir():
            raise StudyError(f"{where}: folder not found: {folder}")
        videos = folder_videos(folder)
    elif "manifest" in spec:
        videos = _read_manifest(_resolve(_expect(spec["manifest"], str, f"{where}: manifest"), base),
                                f"{where}: manifest")
    else:
        videos = {str(k): _resolve(_expect(v, str, f"{where}: videos[{k!r}]"), base)
                  for k, v in _expect(spec["videos"], dict, f"{where}: videos").items()}
    return Model(name, videos)


def _read_criterion(spec: Any, i: int) -> Criterion:
    if isinstance(spec, str):
        if spec in _DEFAULT_BY_ID:
            return _DEFAULT_BY_ID[spec]
        return Criterion(spec, spec.replace("_", " ").capitalize(), f"Which video is better: {spec.replace('_', ' ')}?")
    spec = _expect(spec, dict, f"criteria[{i}]")
    _known_keys(spec, ("id", "label", "question"), f"criteria[{i}]")
    cid = str(_required(spec, "id", f"criteria[{i}]"))
    default = _DEFAULT_BY_ID.get(cid)
    label = spec.get("label") or (default.label if default else cid.replace("_", " ").capitalize())
    question = spec.get("question") or (default.question if default else f"Which video is better: {label.lower()}?")
    return Criterion(cid, str(label), str(question))


def _read_gold(spec: Any, base: Path, i: int) -> GoldItem:
    where = f"gold[{i}]"
    spec = _expect(spec, dict, where)
    _known_keys(spec, ("id", "prompt", "video_a", "video_b", "answer", "criteria"), where)
    gid = str(_required(spec, "id", where))
    answer = str(_required(spec, "answer", f"gold item {gid!r}")).lower()  # checked before the videos
    if answer not in {"a", "b", "tie"}:
        raise StudyError(f"gold item {gid!r}: answer must be a, b or tie, not {answer!r}")
    where = f"gold item {gid!r}"
    video_a, video_b = (_resolve(_expect(_required(spec, key, where), str, f"{where}: {key}"), base)
                        for key in ("video_a", "video_b"))
    return GoldItem(
        id=gid,
        prompt=str(spec.get("prompt", "")),
        video_a=video_a,
        video_b=video_b,
        answer=answer,
        criteria=tuple(str(c) for c in _expect(spec.get("criteria") or [], list, f"gold item {gid!r}: criteria")),
    )


def _read_dataclass(cls: type, spec: Any, where: str, convert: Callable[[str, Any], Any] = lambda k, v: v) -> Any:
    """``cls(**spec)`` after checking that ``spec`` is a mapping of ``cls``'s fields."""
    if spec is None:
        return cls()
    spec = _expect(spec, dict, where)
    _known_keys(spec, tuple(cls.__dataclass_fields__), where)
    return cls(**{k: convert(k, v) for k, v in spec.items()})


def _read_exclusion(spec: Any) -> Exclusion:
    return _read_dataclass(Exclusion, spec, "exclusion",
                           lambda k, v: None if v is None else _number(v, f"exclusion.{k}"))


def _read_raters(spec: Any) -> Raters:
    if spec is None:
        return Raters()
    spec = _expect(spec, dict, "raters")
    _known_keys(spec, ("enrolment", "tokens", "platform"), "raters")
    enrolment = str(spec.get("enrolment", "signed"))
    if enrolment not in ENROLMENTS:
        raise StudyError(f"raters.enrolment must be one of {', '.join(ENROLMENTS)}, not {enrolment!r}")
    tokens = spec.get("tokens")
    if tokens is not None:
        tokens = tuple(str(t) for t in _expect(tokens, list, "raters.tokens"))
        bad = [t for t in tokens if not TOKEN_RE.match(t)]
        if bad:
            raise StudyError(f"raters.tokens: ids must match {TOKEN_RE.pattern}: {bad[:5]}")
        if enrolment == "open":
            raise StudyError("raters.tokens lists the ids of signed links; open enrolment assigns ids itself "
                             "(use one or the other)")
    platform = _read_dataclass(PlatformParams, spec.get("platform"), "raters.platform",
                               lambda k, v: str(_expect(v, str, f"raters.platform.{k}")))
    return Raters(enrolment, tokens, platform)


def _read_completion(spec: Any) -> Completion:
    completion = _read_dataclass(Completion, spec, "completion",
                                 lambda k, v: None if v is None else str(_expect(v, (str, int), f"completion.{k}")))
    if completion.url and not re.match(r"^https?://", completion.url):
        raise StudyError(f"completion.url must start with http:// or https://, not {completion.url!r}")
    return completion


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
    data = _expect(data, dict, "the study file's top level")
    _known_keys(data, FIELDS, "study file")
    name = str(_required(data, "name", "the study file"))
    models = tuple(_read_model(m, base, i) for i, m in enumerate(_expect(_required(data, "models", "the study file"),
                                                                          list, "models")))
    prompts = _read_prompts(data.get("prompts"), base)
    if not prompts:  # default: the prompt ids every model has a video for
        common = set.intersection(*(set(m.videos) for m in models)) if models else set()
        prompts = tuple(Prompt(pid, pid) for pid in sorted(common))
    criteria_spec = _expect(data.get("criteria") or [c.id for c in DEFAULT_CRITERIA], list, "criteria")
    criteria = tuple(_read_criterion(c, i) for i, c in enumerate(criteria_spec))
    storage = _expect(data.get("storage") or {}, dict, "storage")
    _known_keys(storage, ("url",), "storage")
    url = os.environ.get("HUMAN_STUDY_DB_URL") or storage.get("url") or default_storage_url(path, name)
    kwargs = dict(
        name=name,
        models=models,
        prompts=prompts,
        criteria=criteria,
        options=_read_dataclass(Options, data.get("options"), "options",
                                lambda k, v: str(_expect(v, str, f"options.{k}"))),
        quota=_number(data.get("quota", 20), "quota", int),
        repeats=_number(data.get("repeats", 0), "repeats", int),
        gold=tuple(_read_gold(g, base, i) for i, g in enumerate(_expect(data.get("gold") or [], list, "gold"))),
        exclusion=_read_exclusion(data.get("exclusion")),
        seed=_number(data.get("seed", 0), "seed", int),
        storage_url=_resolve_url(str(_expect(url, str, "storage.url")), base),
        admin_password_env=str(_expect(data.get("admin_password_env", "HUMAN_STUDY_ADMIN_PASSWORD"), str,
                                       "admin_password_env")),
        raters=_read_raters(data.get("raters")),
        completion=_read_completion(data.get("completion")),
        min_view_seconds=_number(data.get("min_view_seconds", 0.0), "min_view_seconds"),
        path=path,
    )
    for key in ("title", "instructions", "consent"):
        if key in data:
            kwargs[key] = str(_expect(data[key], (str, int, float), key))
    study = Study(**kwargs)
    problems = structural_problems(study)
    if problems:
        raise StudyError("; ".join(problems))
    return study


def _parse_error(path: Path, exc: Exception) -> str:
    """A one-line description of a YAML/TOML/JSON syntax error, with the position when the parser gives one."""
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:  # PyYAML
        return f"{path}: not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return f"{path}: not valid {path.suffix.lstrip('.').upper()}: {exc}"


def load_study(path: str | os.PathLike) -> Study:
    """Read and validate a study file (format chosen by extension, see :data:`LOADERS`)."""
    path = Path(path).resolve()
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise StudyError(f"{path}: unknown study file type {path.suffix!r}; use one of {sorted(LOADERS)}")
    if not path.is_file():
        raise StudyError(f"study file not found: {path}")
    try:
        data = loader(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, ValueError) as exc:  # json.JSONDecodeError and tomllib.TOMLDecodeError are ValueErrors
        raise StudyError(_parse_error(path, exc)) from exc
    except OSError as exc:
        raise StudyError(f"cannot read the study file {path}: {exc.strerror or exc}") from exc
    if not isinstance(data, dict):
        raise StudyError(f"{path}: the top level must be a mapping of fields (name, models, ...)")
    try:
        return study_from_dict(data, path)
    except StudyError as exc:  # say which file
        raise StudyError(f"{path}: {exc}") from exc


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
        "raters": {"enrolment": study.raters.enrolment, "platform": asdict(study.raters.platform)},
        "completion": asdict(study.completion),
        "min_view_seconds": study.min_view_seconds,
        "instructions": study.instructions,
        "consent": study.consent,
    }
    if study.tokens is not None:
        out["raters"]["tokens"] = list(study.tokens)
    return out


def save_study(study_dict: dict, path: str | os.PathLike) -> Path:
    """Write a study mapping as YAML or JSON (by extension)."""
    path = Path(path)
    dumper = DUMPERS.get(path.suffix.lower())
    if dumper is None:
        raise StudyError(f"cannot write {path.suffix!r}; use one of {sorted(DUMPERS)}")
    path.write_text(dumper(study_dict), encoding="utf-8")
    return path
