"""Study files (YAML / TOML / JSON) and balanced, counterbalanced, seeded assignment."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import pytest
from hs_helpers import MODEL_NAMES, write_study

from human_study.assignment import core_items, model_pairs, rater_plan
from human_study.config import (DEFAULT_CRITERIA, Completion, Raters, StudyError, file_problems, load_study,
                                 study_from_dict)

SECRET = "s" * 64


def _toml_from(data: dict) -> str:
    lines = [f'name = "{data["name"]}"', f'quota = {data["quota"]}', f'repeats = {data["repeats"]}',
             f'seed = {data["seed"]}', f'criteria = {json.dumps(data["criteria"])}']
    for m in data["models"]:
        lines += ["[[models]]", f'name = "{m["name"]}"', f'folder = "{m["folder"]}"']
    for p in data["prompts"]:
        lines += ["[[prompts]]", f'id = "{p["id"]}"', f'text = "{p["text"]}"']
    return "\n".join(lines) + "\n"


def test_yaml_json_toml_give_the_same_study(tmp_path: Path):
    y = load_study(write_study(tmp_path, n_gold=0))
    j = load_study(write_study(tmp_path, n_gold=0, fmt="json"))
    data = json.loads((tmp_path / "study.json").read_text())
    (tmp_path / "study.toml").write_text(_toml_from(data))
    t = load_study(tmp_path / "study.toml")
    for s in (j, t):
        assert s.model_names == y.model_names
        assert s.prompts == y.prompts
        assert s.criterion_ids == y.criterion_ids
        assert s.models[0].videos == y.models[0].videos
        assert (s.quota, s.repeats, s.seed) == (y.quota, y.repeats, y.seed)


def test_defaults_and_path_resolution(tmp_path: Path):
    path = write_study(tmp_path)
    data = {"name": "x", "models": [{"name": "a", "folder": "videos/ModelSecretAlpha"},
                                    {"name": "b", "folder": "videos/ModelSecretBeta"}]}
    study = study_from_dict(data, path)
    assert study.criteria == DEFAULT_CRITERIA
    assert [p.id for p in study.prompts] == ["p0", "p1", "p2", "p3"]  # common file stems
    assert study.storage_url == f"sqlite:///{(tmp_path / 'x.votes.sqlite').resolve()}"
    assert study.options.labels() == {"left": "Left is better", "tie": "No preference", "right": "Right is better"}
    assert file_problems(study) == []
    assert load_study(path).storage_url == f"sqlite:///{(tmp_path / 'votes.sqlite').resolve()}"


def test_manifest_models_and_missing_videos(tmp_path: Path):
    write_study(tmp_path)
    (tmp_path / "m.csv").write_text("prompt_id,path\np0,videos/ModelSecretAlpha/p0.webm\n")
    data = {"name": "x", "prompts": ["one", "two"],
            "models": [{"name": "a", "manifest": "m.csv"}, {"name": "b", "folder": "videos/ModelSecretBeta"}]}
    study = study_from_dict(data, tmp_path / "study.yaml")
    assert study.models[0].videos == {"p0": tmp_path / "videos/ModelSecretAlpha/p0.webm"}
    assert [p.id for p in study.prompts] == ["p001", "p002"]
    assert any("'a' has no video for prompt 'p001'" in p for p in file_problems(study))


@pytest.mark.parametrize("change, message", [
    ({"models": [{"name": "a", "folder": "."}]}, "at least two models"),
    ({"quota": 0}, "quota"),
    ({"repeats": 9, "quota": 2}, "repeats"),
    ({"criteria": ["overall", "overall"]}, "unique"),
    ({"gold": [{"id": "g", "video_a": "a", "video_b": "b", "answer": "left"}]}, "answer must be"),
])
def test_structural_errors(tmp_path: Path, change: dict, message: str):
    data = {"name": "x", "prompts": ["p"], "models": [{"name": "a", "folder": "."}, {"name": "b", "folder": "."}]}
    data.update(change)
    with pytest.raises(StudyError, match=message):
        study_from_dict(data, tmp_path / "s.yaml")


def test_token_rules(tmp_path: Path):
    open_study = load_study(write_study(tmp_path))
    assert open_study.token_allowed("rater_01") and not open_study.token_allowed("bad token/..")
    listed = load_study(write_study(tmp_path, extra={"raters": {"tokens": ["abc"]}}))
    assert listed.token_allowed("abc") and not listed.token_allowed("abd")


@pytest.mark.parametrize("change, message", [
    ({"models": "videos"}, "models must be a list"),
    ({"models": [{"name": "a", "folder": "."}, "b"]}, r"models\[1\] must be a mapping"),
    ({"models": [{"name": "a", "folder": "."}, {"name": "b"}]}, "model 'b' needs exactly one of"),
    ({"models": [{"name": "a", "folder": "."}, {"name": "b", "folder": "nowhere"}]}, "model 'b': folder not found"),
    ({"models": [{"name": "a", "folder": "."}, {"name": "b", "manifest": "m.csv"}]}, "manifest: file not found"),
    ({"prompts": "prompts.txt"}, "prompts: file not found"),
    ({"quota": "many"}, "quota must be an integer"),
    ({"criteria": [{"label": "x"}]}, r"criteria\[0\] needs 'id'"),
    ({"options": {"left": "L", "centre": "C"}}, "options: unknown field"),
    ({"exclusion": {"min_gold_acc": 0.5}}, "exclusion: unknown field"),
    ({"gold": [{"id": "g", "answer": "a", "video_a": "x.webm"}]}, "gold item 'g' needs 'video_b'"),
    ({"titel": "typo"}, "unknown field.*'titel'"),
    ({"raters": {"enrolment": "anyone"}}, "raters.enrolment must be one of"),
    ({"raters": {"enrolment": "open", "tokens": ["a"]}}, "use one or the other"),
    ({"raters": {"tokens": ["bad id"]}}, "raters.tokens: ids must match"),
    ({"completion": {"url": "javascript:alert(1)"}}, "completion.url must start with http"),
    ({"storage": {"uri": "sqlite://"}}, "storage: unknown field"),
])
def test_malformed_study_files_name_the_field(tmp_path: Path, change: dict, message: str):
    data = {"name": "x", "prompts": ["p"], "models": [{"name": "a", "folder": "."}, {"name": "b", "folder": "."}]}
    data.update(change)
    with pytest.raises(StudyError, match=message):
        study_from_dict(data, tmp_path / "s.yaml")


@pytest.mark.parametrize("text, suffix, message", [
    ("name: x\nmodels: [a, b\n", ".yaml", "not valid YAML at line 3"),
    ('{"name": "x", ', ".json", "not valid JSON"),
    ("name = \n", ".toml", "not valid TOML"),
    ("- just\n- a list\n", ".yaml", "top level must be a mapping"),
])
def test_unparsable_study_files_are_one_clear_error(tmp_path: Path, text: str, suffix: str, message: str):
    path = tmp_path / f"study{suffix}"
    path.write_text(text)
    with pytest.raises(StudyError, match=message):
        load_study(path)
    with pytest.raises(StudyError, match="study file not found"):
        load_study(tmp_path / "missing.yaml")


def test_raters_and_completion_fields(tmp_path: Path):
    study = load_study(write_study(tmp_path))
    assert study.raters == Raters() and study.raters.enrolment == "signed" and study.completion == Completion()
    crowd = load_study(write_study(tmp_path, extra={
        "raters": {"enrolment": "open", "platform": {"participant": "workerId"}},
        "completion": {"code": 1234, "url": "https://example.org/done"}}))
    assert crowd.raters.enrolment == "open" and crowd.raters.platform.participant == "workerId"
    assert crowd.raters.platform.study == "STUDY_ID"  # the other names keep Prolific's defaults
    assert crowd.completion == Completion("1234", "https://example.org/done")


# ------------------------------------------------------------------------------------------------------ assignment


def _study(tmp_path: Path, **kw):
    return load_study(write_study(tmp_path, **kw))


def test_core_items_cover_every_prompt_and_pair_once(tmp_path: Path):
    study = _study(tmp_path, models=MODEL_NAMES, n_prompts=5, quota=6, repeats=0, n_gold=0)
    items = core_items(study, SECRET)
    keys = [(it.prompt_id, it.model_a, it.model_b) for it in items]
    assert len(keys) == len(set(keys)) == 5 * 3
    assert set(keys) == {(p.id, a, b) for p in study.prompts for a, b in model_pairs(study)}
    for it in items:  # opaque ids: nothing about the models
        assert all(m.lower() not in it.id.lower() for m in MODEL_NAMES)


def test_coverage_over_raters_is_balanced(tmp_path: Path):
    study = _study(tmp_path, models=MODEL_NAMES, n_prompts=5, quota=6, repeats=0, n_gold=0)
    counts = Counter()
    for r in range(7):  # 42 slots over 15 items
        plan, _ = rater_plan(study, SECRET, f"r{r}", r)
        counts.update(e.item_id for e in plan)
        assert len({e.item_id for e in plan}) == 6  # no item twice for one rater
    assert len(counts) == 15 and max(counts.values()) - min(counts.values()) <= 1


def test_each_rater_sees_pairs_evenly_and_sides_counterbalanced(tmp_path: Path):
    study = _study(tmp_path, models=MODEL_NAMES, n_prompts=6, quota=12, repeats=0, n_gold=0)
    by_id = {it.id: it for it in core_items(study, SECRET)}
    left_total = Counter()
    for r in range(4):
        plan, _ = rater_plan(study, SECRET, f"rater{r}", r)
        pairs = Counter((by_id[e.item_id].model_a, by_id[e.item_id].model_b) for e in plan)
        assert set(pairs.values()) == {4}  # 12 items over 3 pairs
        for pair in pairs:
            sides = [e.left_is_a for e in plan if (by_id[e.item_id].model_a, by_id[e.item_id].model_b) == pair]
            assert sum(sides) == 2  # model A on the left in exactly half
        for e in plan:
            it = by_id[e.item_id]
            left_total[it.model_a if e.left_is_a else it.model_b] += 1
    assert len(set(left_total.values())) == 1  # every model shown left equally often


def test_odd_counts_alternate_between_raters(tmp_path: Path):
    study = _study(tmp_path, n_prompts=6, quota=3, repeats=0, n_gold=0)
    by_id = {it.id: it for it in core_items(study, SECRET)}
    lefts = []
    for r in range(2):
        plan, _ = rater_plan(study, SECRET, f"r{r}", r)
        lefts.append(sum(e.left_is_a for e in plan))
    assert sorted(lefts) == [1, 2] and sum(lefts) == 3


def test_plan_is_seeded_and_deterministic(tmp_path: Path):
    study = _study(tmp_path, n_prompts=6, quota=6, repeats=2, n_gold=1)
    assert rater_plan(study, SECRET, "r1", 0) == rater_plan(study, SECRET, "r1", 0)
    assert rater_plan(study, SECRET, "r1", 0) != rater_plan(study, SECRET, "r2", 0)
    reseeded = _study(tmp_path, n_prompts=6, quota=6, repeats=2, n_gold=1, extra={"seed": 8})
    assert [e.left_is_a for e in rater_plan(study, SECRET, "r1", 0)[0]] != \
        [e.left_is_a for e in rater_plan(reseeded, SECRET, "r1", 0)[0]] or \
        [e.item_id for e in rater_plan(study, SECRET, "r1", 0)[0]] != \
        [e.item_id for e in rater_plan(reseeded, SECRET, "r1", 0)[0]]


def test_repeats_swap_sides_after_the_original_and_gold_is_included(tmp_path: Path):
    study = _study(tmp_path, n_prompts=8, quota=8, repeats=3, n_gold=2)
    for r in range(5):
        plan, repeats = rater_plan(study, SECRET, f"r{r}", r)
        assert len(plan) == 8 + 3 + 2
        pos = {e.item_id: e for e in plan}
        for rep in repeats:
            original, again = pos[rep.duplicate_of], pos[rep.id]
            assert again.left_is_a != original.left_is_a
            assert again.position > original.position
        assert sum(1 for e in plan if e.item_id not in {i.id for i in core_items(study, SECRET)}
                   and e.item_id not in {rep.id for rep in repeats}) == 2
    assert [e.position for e in plan] == list(range(len(plan)))


def test_quota_larger_than_items_is_capped(tmp_path: Path):
    study = _study(tmp_path, n_prompts=3, quota=10, repeats=5, n_gold=0)
    plan, repeats = rater_plan(study, SECRET, "r", 0)
    assert len(repeats) == 3 and len(plan) == 6 and len({e.item_id for e in plan}) == 6


def test_pairs_are_all_unordered_combinations(tmp_path: Path):
    study = _study(tmp_path, models=MODEL_NAMES, n_gold=0)
    assert model_pairs(study) == list(itertools.combinations(MODEL_NAMES, 2))
