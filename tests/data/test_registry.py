"""The dataset registry: built-ins, registration, generic file loaders, unknown names, concatenation."""

import pytest

from sapo_vl.data import DATASETS, load_dataset_by_name, register_dataset, write_jsonl
from sapo_vl.errors import DataError, UnknownNameError


def test_builtins_are_registered():
    assert {"easy_vqa", "synthetic_shapes", "human_eval", "jsonl", "json", "parquet", "disk"} <= set(DATASETS)


def test_unknown_name_lists_registered_names_and_the_closest():
    with pytest.raises(UnknownNameError) as info:
        load_dataset_by_name("easy_vq")
    msg = str(info.value)
    assert msg.startswith("unknown dataset 'easy_vq'; registered datasets: ")
    assert "synthetic_shapes" in msg and "jsonl" in msg and msg.endswith("(did you mean 'easy_vqa'?)")


def test_an_option_the_builder_does_not_take_is_a_data_error_naming_its_options():
    with pytest.raises(DataError, match=r"dataset 'human_eval' has no option\(s\) \['limt'\]; its options: \[\]"):
        load_dataset_by_name("human_eval", split="test", limt=3)
    with pytest.raises(DataError, match=r"unknown option\(s\) \['num_colours'\]"):
        load_dataset_by_name("synthetic_shapes", num_colours=3)


def test_on_error_reaches_only_builders_that_name_it(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"prompt": "p", "answer": "a"}\nnot json\n')
    records = load_dataset_by_name("jsonl", path=tmp_path / "t.jsonl", on_error="skip")
    assert len(records) == 1 and records.report.skipped == {"invalid_json": 1}
    assert len(load_dataset_by_name("synthetic_shapes", n=2, on_error="skip")) == 2


def test_human_eval_records_carry_the_code_verifier_columns():
    records = load_dataset_by_name("human_eval", split="test")
    assert len(records) == 164 and records[0]["id"] == "HumanEval/0" and records[0]["reward"] == "code"
    assert {"tests", "entry_point", "code_prefix"} <= set(records[0]) and records[0]["images"] == []


def test_register_as_decorator_and_load_with_split_and_options():
    @register_dataset("_test_echo", overwrite=True)
    def build(split="train", n=1):
        return [{"id": f"{split}-{i}", "prompt": "p", "images": [], "answer": "a", "reward": None, "meta": {}}
                for i in range(n)]

    try:
        assert [r["id"] for r in load_dataset_by_name("_test_echo", split="test", n=2)] == ["test-0", "test-1"]
    finally:
        DATASETS.pop("_test_echo")


def test_reregistering_a_name_needs_overwrite():
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("easy_vqa", lambda split="train": [])


def test_jsonl_loader_fills_split_placeholder(tmp_path):
    records = load_dataset_by_name("synthetic_shapes", split="test", n=3)
    write_jsonl(records, tmp_path / "test.jsonl")
    loaded = load_dataset_by_name("jsonl", split="test", path=str(tmp_path / "{split}.jsonl"))
    assert [r["id"] for r in loaded] == [r["id"] for r in records]


def test_parquet_loader_passes_field_options(fixture_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"question": "q?", "label": "red"}]), tmp_path / "t.parquet")
    (record,) = load_dataset_by_name("parquet", path=tmp_path / "t.parquet", prompt_field="question",
                                     answer_field="label")
    assert (record["prompt"], record["answer"]) == ("q?", "red")


def test_file_loader_without_path_says_so():
    with pytest.raises(DataError, match="needs path="):
        load_dataset_by_name("disk")


def test_export_script_writes_files_that_load_back(tmp_path):
    import importlib.util
    from pathlib import Path

    from sapo_vl.data import load_records

    from .helpers import pixels

    script = Path(__file__).resolve().parents[2] / "data" / "scripts" / "export_dataset.py"
    spec = importlib.util.spec_from_file_location("export_dataset", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = load_dataset_by_name("synthetic_shapes", split="test", n=4, num_colors=4)
    for out in (tmp_path / "x.jsonl", tmp_path / "x.parquet"):
        module.main(["synthetic_shapes", "--split", "test", "--out", str(out), "--option", "n=4",
                     "--option", "num_colors=4"])
        loaded = load_records(out)
        assert [(r["id"], r["answer"], r["meta"]) for r in loaded] == [
            (r["id"], r["answer"], r["meta"]) for r in expected]
        assert [pixels(r["images"][0]) for r in loaded] == [pixels(r["images"][0]) for r in expected]
