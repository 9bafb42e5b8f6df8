"""load_records over JSONL, Parquet, save_to_disk folders and in-memory data; field mapping; writers."""

import json
import shutil

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sapo_vl.data import RecordError, load_records, write_jsonl, write_parquet
from sapo_vl.data.images import decode_image
from sapo_vl.errors import DataError

from .helpers import pixels, png_bytes


def comparable(records):
    """Records with images replaced by their pixels, so two loads can be compared with ==."""
    return [{**r, "images": [pixels(im) for im in r["images"]]} for r in records]


def raw_rows_with_image_bytes(fixture_jsonl):
    """The fixture rows with every image turned into an HF {bytes, path} dict (Arrow needs uniform columns)."""
    rows = [json.loads(line) for line in fixture_jsonl.read_text().splitlines()]
    for row in rows:
        imgs = row["images"] if isinstance(row["images"], list) else [row["images"]]
        row["images"] = [{"bytes": png_bytes(decode_image(v, fixture_jsonl.parent)), "path": None} for v in imgs]
    return rows


def test_fixture_loads_four_records_with_expected_images(fixture_jsonl, red_square):
    records = load_records(fixture_jsonl)
    assert [r["id"] for r in records] == ["fx-red", "fx-blue", "fx-datauri", "fx-multi"]
    assert [len(r["images"]) for r in records] == [1, 1, 1, 2]
    assert all(im.mode == "RGB" and im.size == (32, 32) for r in records for im in r["images"])
    assert pixels(records[0]["images"][0]) == pixels(red_square)
    assert pixels(records[3]["images"][1]) == pixels(red_square)
    assert records[2]["images"][0].getpixel((16, 20)) == (40, 170, 60)  # the data-URI triangle is green
    assert records[0]["answer"] == "red" and records[0]["reward"] == "vqa"
    assert records.report.kept == 4 and not records.report.skipped


def test_fixture_paths_resolve_independently_of_cwd(fixture_jsonl, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert len(load_records(fixture_jsonl)) == 4


def test_jsonl_parquet_and_save_to_disk_give_identical_records(fixture_jsonl, tmp_path):
    rows = raw_rows_with_image_bytes(fixture_jsonl)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "tiny.parquet")
    ds = datasets.Dataset.from_list(rows).cast_column("images", datasets.List(datasets.Image()))
    ds.save_to_disk(str(tmp_path / "tiny_ds"))

    from_jsonl = comparable(load_records(fixture_jsonl))
    assert comparable(load_records(tmp_path / "tiny.parquet")) == from_jsonl
    assert comparable(load_records(tmp_path / "tiny_ds")) == from_jsonl
    assert comparable(load_records(ds)) == from_jsonl
    assert comparable(load_records(rows)) == from_jsonl


def test_parquet_relative_image_paths_resolve_against_the_parquet_folder(fixture_dir, tmp_path, monkeypatch):
    shutil.copytree(fixture_dir / "images", tmp_path / "images")
    rows = [{"prompt": "q", "answer": "red", "image": {"bytes": None, "path": "images/red_square.png"}}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rel.parquet")
    monkeypatch.chdir(fixture_dir.parent)
    (record,) = load_records(tmp_path / "rel.parquet")
    assert record["images"][0].getpixel((16, 16)) == (220, 40, 40)


def test_field_mapping_adapts_a_public_layout(red_square):
    rows = [{"qid": 7, "question": "What color?", "picture": red_square, "label": "red", "difficulty": 2}]
    (record,) = load_records(rows, id_field="qid", prompt_field="question", image_field="picture",
                             answer_field="label", default_reward="vqa")
    assert record["id"] == "7"
    assert record["prompt"] == "What color?"
    assert pixels(record["images"][0]) == pixels(red_square)
    assert record["answer"] == "red" and record["reward"] == "vqa"
    assert record["difficulty"] == 2  # extra columns pass through unchanged
    assert not {"qid", "question", "picture", "label"} & set(record)


def test_singular_image_column_is_found_without_mapping(red_square):
    (record,) = load_records([{"prompt": "q", "image": red_square, "answer": "a"}])
    assert len(record["images"]) == 1


def test_unmapped_column_named_like_a_normalised_key_moves_to_meta():
    (record,) = load_records([{"question": "real prompt", "prompt": "old", "answer": "a"}], prompt_field="question")
    assert record["prompt"] == "real prompt"
    assert record["meta"]["prompt"] == "old"


def test_missing_ids_are_generated_from_dataset_name_and_index():
    records = load_records([{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": "2"}], dataset="toy")
    assert [r["id"] for r in records] == ["toy-0", "toy-1"]


def test_class_label_answers_become_names(red_square):
    ds = datasets.Dataset.from_list([{"prompt": "q", "image": red_square, "label": 1}])
    ds = ds.cast_column("label", datasets.ClassLabel(names=["cat", "dog"]))
    (record,) = load_records(ds, answer_field="label")
    assert record["answer"] == "dog"


def test_dataset_dict_needs_a_split_and_uses_it():
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list([{"prompt": "p", "answer": "a"}]),
                               "test": datasets.Dataset.from_list([{"prompt": "t", "answer": "b"}] * 2)})
    assert len(load_records(dd, split="test")) == 2
    with pytest.raises(ValueError, match=r"splits \['test', 'train'\]"):
        load_records(dd)


def test_prompt_template_formats_with_columns():
    (record,) = load_records([{"prompt": "Name it.", "answer": "a", "hint": "a colour"}],
                             prompt_template="{prompt} Hint: {hint}.")
    assert record["prompt"] == "Name it. Hint: a colour."


def test_limit_keeps_that_many_valid_records(fixture_jsonl):
    assert [r["id"] for r in load_records(fixture_jsonl, limit=2)] == ["fx-red", "fx-blue"]


def test_list_and_numeric_answers_are_kept():
    records = load_records([{"prompt": "p", "answer": ["2", "two"]}, {"prompt": "q", "answer": 3.5}])
    assert records[0]["answer"] == ["2", "two"] and records[1]["answer"] == 3.5


@pytest.mark.parametrize("image_dir", ["images", None])
def test_write_jsonl_round_trips(fixture_jsonl, tmp_path, image_dir):
    records = load_records(fixture_jsonl)
    out = write_jsonl(records, tmp_path / "sub" / "out.jsonl", image_dir=image_dir)
    assert comparable(load_records(out)) == comparable(records)


def test_write_parquet_round_trips(fixture_jsonl, tmp_path):
    records = load_records(fixture_jsonl)
    out = write_parquet(records, tmp_path / "out.parquet")
    assert comparable(load_records(out)) == comparable(records)


def test_write_parquet_rejects_mixed_column_types_clearly(tmp_path):
    records = [{"id": "a", "prompt": "p", "images": [], "answer": "x", "reward": None, "meta": {}},
               {"id": "b", "prompt": "p", "images": [], "answer": ["x", "y"], "reward": None, "meta": {}}]
    with pytest.raises(ValueError, match="one Arrow schema"):
        write_parquet(records, tmp_path / "bad.parquet")


def test_unknown_file_suffix_asks_for_format(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("{}")
    with pytest.raises(ValueError, match="format="):
        load_records(path)


def test_missing_source_file_is_named(tmp_path):
    with pytest.raises(DataError, match="dataset source not found: .*nope.jsonl"):
        load_records(tmp_path / "nope.jsonl")


def test_pil_inputs_are_copied_to_rgb_not_aliased():
    src = Image.new("RGBA", (32, 32), (1, 2, 3, 255))
    (record,) = load_records([{"prompt": "p", "images": src, "answer": "a"}])
    assert record["images"][0].mode == "RGB" and record["images"][0] is not src


def test_explicit_image_field_absent_from_a_row_is_an_error():
    with pytest.raises(RecordError, match=r"record 0 .*field 'picture'.*absent.*\['answer', 'prompt'\]"):
        load_records([{"prompt": "p", "answer": "a"}], image_field="picture")


def test_text_only_rows_load_with_no_images():
    (record,) = load_records([{"prompt": "p", "answer": "a"}])
    assert record["images"] == []
