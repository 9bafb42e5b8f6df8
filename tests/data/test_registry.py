"""The dataset registry: built-ins, registration, generic file loaders, unknown names, concatenation."""

import pytest

from sapo_vl.data import DATASETS, concat_records, load_dataset_by_name, register_dataset, write_jsonl


def test_builtins_are_registered():
    assert {"easy_vqa", "synthetic_shapes", "jsonl", "parquet", "disk"} <= set(DATASETS)


def test_unknown_name_lists_registered_names():
    with pytest.raises(ValueError) as info:
        load_dataset_by_name("no_such_set")
    msg = str(info.value)
    assert "no_such_set" in msg and "easy_vqa" in msg and "synthetic_shapes" in msg and "jsonl" in msg


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
    with pytest.raises(ValueError, match="needs path="):
        load_dataset_by_name("disk")


def test_concat_records_rejects_ids_shared_across_datasets():
    a = load_dataset_by_name("synthetic_shapes", n=2)
    b = load_dataset_by_name("synthetic_shapes", split="test", n=2)
    assert len(concat_records(a, b)) == 4
    with pytest.raises(ValueError, match="synthetic_shapes-train-0"):
        concat_records(a, a)


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
