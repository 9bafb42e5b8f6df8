"""Task definitions: every YAML in eval/ loads its fixture into records; validation errors name file and key."""

import io
import os
import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

from sapo_vl.data import render_template
from sapo_vl.errors import DataError, UnknownNameError
from sapo_vl.evaluation.adapters import TaskDataError
from sapo_vl.evaluation.tasks import (
    BUILTIN_DIR,
    TASKS,
    TaskSpecError,
    available_tasks,
    load_task_file,
    load_task_records,
    parse_task,
    resolve_task,
    task_file,
)

REPO = Path(__file__).resolve().parents[2]
EVAL_DIR = REPO / "eval"
TASK_FILES = sorted(EVAL_DIR.glob("*.yaml"))
FILE_TASKS = [p for p in TASK_FILES if yaml.safe_load(p.read_text())["source"]["type"] != "registered"]
IMAGE_TASKS = {"mathvista_testmini", "mathvision", "mmmu_val", "chartqa", "docvqa", "ai2d"}
EXPECTED = {"humaneval", "easy_vqa", "mathvista_testmini", "mathvision", "mmmu_val", "chartqa", "docvqa", "ai2d",
            "math500", "aime2024", "aime2025", "mbpp", "livecodebench"}


def _open(image):
    if isinstance(image, (bytes, bytearray)):
        return Image.open(io.BytesIO(image))
    if isinstance(image, (str, Path)):
        return Image.open(image)
    return image


def test_every_expected_task_is_defined():
    assert EXPECTED <= {p.stem for p in TASK_FILES}


@pytest.mark.parametrize("path", FILE_TASKS, ids=lambda p: p.stem)
def test_task_loads_its_fixture_into_records(path):
    spec = load_task_file(path)
    assert spec.fixture, f"{path.name} has no fixture"
    records = load_task_records(spec, str(path.parent / spec.fixture))
    assert 2 <= len(records) == records.report.total <= 3
    for rec in records:
        assert isinstance(rec["prompt"], (str, list)) and rec["prompt"]
        if spec.verifier.name == "code":
            assert rec["tests"], f"{spec.name} doc {rec['id']} has no tests"
        else:
            assert rec["answer"] not in (None, "", [])
        assert rec["reward"] in ("math", "mcq", "vqa", "code")
        for column in spec.verifier.columns:
            assert column in rec
        if spec.name in IMAGE_TASKS:
            assert rec["images"], f"{spec.name} doc {rec['id']} has no image"
            for image in rec["images"]:
                assert _open(image).size[0] >= 16
        else:
            assert rec["images"] == []
    assert len({r["id"] for r in records}) == len(records)


@pytest.mark.parametrize("path", [p for p in TASK_FILES if p not in FILE_TASKS], ids=lambda p: p.stem)
def test_registered_dataset_task_loads_offline(path):
    spec = load_task_file(path)
    records = load_task_records(spec, limit=3)
    assert len(records) == 3 and records.report.total >= 164
    assert all(r["prompt"] and r["answer"] and r["meta"]["task"] == spec.name for r in records)


def test_a_version_1_pip_source_says_what_replaced_it():
    with pytest.raises(TaskSpecError, match=r"source: type 'pip' was renamed: use \{type: registered"):
        parse_task(_raw(source={"type": "pip", "loader": "easy_vqa"}))


def test_a_registered_source_keeps_the_datasets_prompt_images_and_answer():
    spec = parse_task({"name": "shapes", "source": {"type": "registered", "name": "synthetic_shapes",
                                                    "kwargs": {"n": 4, "num_colors": 2}},
                       "verifier": {"name": "vqa"}})
    records = load_task_records(spec)
    assert [r["id"] for r in records] == [f"synthetic_shapes-test-{i}" for i in range(4)]
    assert records[0]["prompt"] == "What color is the shape?" and len(records[0]["images"]) == 1
    assert records[0]["answer"] in ("red", "green") and records[0]["reward"] == "vqa"


def test_an_unknown_registered_dataset_names_the_registered_ones():
    spec = parse_task({"name": "t", "source": {"type": "registered", "name": "easy_vq"}, "verifier": {"name": "vqa"}})
    with pytest.raises(DataError, match="unknown dataset 'easy_vq'.*did you mean 'easy_vqa'"):
        load_task_records(spec)


def test_builtin_tasks_are_copies_of_the_eval_dir_ones():
    builtin = sorted(BUILTIN_DIR.glob("*.yaml"))
    assert {p.stem for p in builtin} == {"easy_vqa", "humaneval", "synthetic_shapes"}
    for path in builtin:
        assert path.read_text() == (EVAL_DIR / path.name).read_text(), f"{path.name} drifted from eval/"


def test_task_names_resolve_from_the_repo_and_from_the_package(tmp_path, monkeypatch):
    assert task_file(available_tasks()["math500"]) == EVAL_DIR / "math500.yaml"
    monkeypatch.chdir(tmp_path)  # outside the repo: the editable install still finds eval/ next to the package
    assert resolve_task("easy_vqa").name == "easy_vqa"
    assert resolve_task(str(EVAL_DIR / "ai2d.yaml")).name == "ai2d"


def test_env_dir_takes_priority(tmp_path, monkeypatch):
    shutil.copy(EVAL_DIR / "math500.yaml", tmp_path / "mine.yaml")
    monkeypatch.setenv("SAPO_VL_EVAL_DIR", str(tmp_path))
    assert task_file(available_tasks()["mine"]) == tmp_path / "mine.yaml"
    monkeypatch.delenv("SAPO_VL_EVAL_DIR")
    assert "mine" not in available_tasks()  # re-read: a task file that is no longer found is no longer listed


def test_unknown_task_lists_available_names():
    with pytest.raises(UnknownNameError, match=r"unknown eval task 'mathh500'; registered eval tasks: .*math500.*"
                                               r"\(did you mean 'math500'\?\)"):
        resolve_task("mathh500")


def test_a_plugin_registers_a_task_that_wins_over_a_file_of_the_same_name():
    spec = parse_task(_raw(name="math500", description="mine"))
    TASKS.register("math500", lambda: spec, overwrite=True)
    try:
        assert resolve_task("math500") is spec and task_file(available_tasks()["math500"]) is None
    finally:
        del TASKS["math500"]
    assert resolve_task("math500").description != "mine"


def test_missing_data_names_the_override_env_var_and_where_to_get_it(monkeypatch):
    monkeypatch.delenv("SAPO_VL_MATHVISTA", raising=False)
    spec = resolve_task("mathvista_testmini")
    with pytest.raises(TaskDataError) as err:
        load_task_records(spec)
    text = str(err.value)
    assert "--data-path mathvista_testmini=PATH" in text and "$SAPO_VL_MATHVISTA" in text
    assert "AI4Math/MathVista" in text


def test_env_var_gives_the_data_path(monkeypatch):
    monkeypatch.setenv("SAPO_VL_MATH500", str(EVAL_DIR / "fixtures/math500/test.jsonl"))
    records = load_task_records(resolve_task("math500"))
    assert records[0]["id"] == "test/prealgebra/1.json"


def _raw(**over):
    raw = {"name": "t", "source": {"type": "jsonl", "path": "x.jsonl"}, "answer": "answer",
           "verifier": {"name": "math"}}
    raw.update(over)
    return raw


def test_unknown_keys_are_listed_with_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_raw(promt="x", colour=1)))
    with pytest.raises(TaskSpecError, match=r"bad.yaml: unknown key\(s\) colour, promt \(did you mean prompt\?\)"):
        load_task_file(path)


def test_unknown_nested_key_names_its_section():
    with pytest.raises(TaskSpecError, match=r"<task>: unknown key\(s\) generation.temprature \(did you mean "
                                            r"generation.temperature\?\); valid keys: generation.n, "):
        parse_task(_raw(generation={"temprature": 0.5}))


def test_wrong_type_names_the_key():
    with pytest.raises(TaskSpecError, match=r"generation.n: expected a valid integer.*, got 'four'"):
        parse_task(_raw(generation={"n": "four"}))
    with pytest.raises(TaskSpecError, match="generation.top_p: expected a number greater than 0, got 0"):
        parse_task(_raw(generation={"top_p": 0}))
    with pytest.raises(TaskSpecError, match=r"<task>: k\[0\]: expected a number greater than 0, got 0"):
        parse_task(_raw(k=[0]))
    with pytest.raises(TaskSpecError, match=r"exports\[0\]: expected 'humaneval' or 'evalplus', got 'plus'"):
        parse_task(_raw(exports="plus"))
    with pytest.raises(TaskSpecError, match=r"<task>: name: String should match pattern .*, got 'a b'"):
        parse_task(_raw(name="a b"))


def test_one_value_may_stand_for_a_list_and_a_string_for_the_prompt():
    spec = parse_task(_raw(k=2, images="image", exports="humaneval", fields={"question": "q"}, prompt="{q}?"))
    assert (spec.k, spec.images, spec.exports, spec.fields) == ([2], ["image"], ["humaneval"], {"question": ["q"]})
    assert spec.prompt.template == "{q}?"


def test_missing_required_keys_are_listed():
    with pytest.raises(TaskSpecError, match=r"<task>: missing required key\(s\) verifier"):
        parse_task({"name": "t", "source": {}})


def test_verifier_columns_may_not_shadow_record_keys():
    with pytest.raises(TaskSpecError, match=r"verifier.columns: \['prompt'\] clash with record keys"):
        parse_task(_raw(verifier={"name": "math", "columns": {"prompt": "x"}}))


def test_template_fills_fields_and_leaves_latex_braces():
    text = render_template(r"{q} in \boxed{} {{q}}", {"q": "1+1?"})
    assert text == r"1+1? in \boxed{} {q}"
    with pytest.raises(KeyError, match="the template uses {missing} but there is no field 'missing'"):
        render_template("{missing}", {"q": 1})


def test_system_prompt_makes_chat_messages(tmp_path):
    rows = tmp_path / "d.jsonl"
    rows.write_text('{"id": 1, "question": "hi", "answer": "x"}\n')
    spec = parse_task(_raw(source={"type": "jsonl", "path": str(rows)},
                           prompt={"template": "{question}", "system": "Be brief."}))
    (rec,) = load_task_records(spec)
    assert rec["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


def test_missing_image_file_names_the_doc_and_path(tmp_path):
    rows = tmp_path / "d.jsonl"
    rows.write_text('{"id": "a", "question": "q", "answer": "x", "image": "nope.png"}\n')
    spec = parse_task(_raw(source={"type": "jsonl", "path": str(rows)}, images=["image"]))
    with pytest.raises(TaskDataError, match=r"record 0 \(id 'a'\), field 'images\[0\]': image file not found: "
                                            r".*nope.png"):
        load_task_records(spec)


def test_duplicate_ids_are_refused(tmp_path):
    rows = tmp_path / "d.jsonl"
    rows.write_text('{"id": 1, "question": "q", "answer": "x"}\n' * 2)
    with pytest.raises(TaskDataError, match="record 1 \\(id '1'\\), field 'id': id already used by record 0"):
        load_task_records(parse_task(_raw(source={"type": "jsonl", "path": str(rows)})))


def test_limit_reads_only_the_first_rows_and_reports_full_size():
    spec = resolve_task("mathvista_testmini")
    records = load_task_records(spec, str(EVAL_DIR / spec.fixture), limit=2)
    assert [r["id"] for r in records] == ["1", "2"] and records.report.total == 3


def test_relative_source_path_resolves_against_the_yaml(tmp_path):
    shutil.copytree(EVAL_DIR / "fixtures/math500", tmp_path / "data")
    raw = yaml.safe_load((EVAL_DIR / "math500.yaml").read_text())
    raw["source"]["path"] = "data/test.jsonl"
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(raw))
    cwd = os.getcwd()
    try:
        os.chdir("/")
        records = load_task_records(load_task_file(tmp_path / "m.yaml"))
    finally:
        os.chdir(cwd)
    assert len(records) == 2
