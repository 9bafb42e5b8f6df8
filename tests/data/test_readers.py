"""The one reader: every file layout training and evaluation read, sizes without reading, hostile input."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sapo_vl.data import load_records, open_rows
from sapo_vl.data.images import ImageDecodeError, decode_image, resolve_image
from sapo_vl.errors import DataError

from .helpers import png_bytes

ROWS = [{"id": "a", "prompt": "p", "answer": "x"}, {"id": "b", "prompt": "q", "answer": "y"}]


def test_a_json_list_and_an_object_of_objects_read_as_rows(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps(ROWS))
    (tmp_path / "keyed.json").write_text(json.dumps({r["id"]: r for r in ROWS}))  # MathVista's annotation layout
    for name in ("list.json", "keyed.json"):
        rows = open_rows(tmp_path / name)
        assert len(rows) == 2 and list(rows) == ROWS


def test_a_json_file_holding_json_lines_is_read_as_json_lines(tmp_path):
    (tmp_path / "rows.json").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    assert [r["id"] for r in load_records(tmp_path / "rows.json")] == ["a", "b"]


def test_a_folder_of_parquet_or_jsonl_files_reads_them_in_name_order(tmp_path):
    pq_dir, jl_dir = tmp_path / "pq", tmp_path / "jl"
    pq_dir.mkdir(), jl_dir.mkdir()
    for i, row in enumerate(reversed(ROWS)):
        pq.write_table(pa.Table.from_pylist([row]), pq_dir / f"part-{1 - i}.parquet")
        (jl_dir / f"part-{1 - i}.jsonl").write_text(json.dumps(row) + "\n")
    for folder in (pq_dir, jl_dir):
        rows = open_rows(folder)
        assert len(rows) == 2 and [r["id"] for r in rows] == ["a", "b"]


def test_the_size_is_known_and_a_limit_reads_only_what_it_needs(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}", "answer": "a"}) + "\n" for i in range(50)))
    records = load_records(path, limit=3)
    assert len(records) == 3 and records.report.total == 50 and records.report.seen == 3


def test_a_line_that_is_not_utf8_or_nested_too_deep_is_a_named_skip(tmp_path):
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b'{"prompt": "ok", "answer": "a"}\n{"prompt": "caf\xe9", "answer": "a"}\n'
                     + b"[" * 100_000 + b"]" * 100_000 + b"\n")
    records = load_records(path, on_error="skip")
    assert len(records) == 1 and records.report.skipped == {"invalid_json": 2}
    messages = " ".join(records.report.examples["invalid_json"])
    assert "line 2" in messages and "not UTF-8" in messages and "line 3" in messages and "nested too deeply" in messages


def test_a_missing_source_and_an_unknown_suffix_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="dataset source not found"):
        open_rows(tmp_path / "nope.jsonl")
    (tmp_path / "rows.txt").write_text("{}")
    with pytest.raises(DataError, match="format="):
        open_rows(tmp_path / "rows.txt")


@pytest.mark.parametrize("value,reason", [
    ({"bytes": "abc"}, "corrupt_image"), ({"bytes": -1}, "corrupt_image"), ({"path": 123}, "corrupt_image"),
    (b"", "missing_image"), ("/proc/self/mem", "corrupt_image"), (12, "corrupt_image"),
])
def test_malformed_image_values_are_image_errors_not_crashes(value, reason):
    with pytest.raises(ImageDecodeError) as info:
        decode_image(value)
    assert info.value.reason == reason


def test_a_large_non_image_file_is_refused_by_size_or_fails_on_its_header_unread(tmp_path, monkeypatch):
    from sapo_vl.data import images

    big = tmp_path / "big.png"
    with open(big, "wb") as fh:
        fh.truncate(2 * 1024**3)  # a sparse 2 GB file: reading it whole would need 2 GB of memory
    with pytest.raises(ImageDecodeError, match=r"is 2048 MB; expected at most 256 MB"):
        decode_image(big)
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 4 * 1024**3)
    with pytest.raises(ImageDecodeError, match="cannot decode image"):
        decode_image(big)


def test_resolve_image_checks_without_decoding_and_decode_gives_the_same_pixels(tmp_path):
    image = Image.new("RGB", (32, 32), (10, 200, 30))
    image.save(tmp_path / "a.png")
    ref = resolve_image("a.png", tmp_path)
    assert ref == (tmp_path / "a.png").absolute()
    assert decode_image(ref).tobytes() == decode_image(png_bytes(image)).tobytes() == image.tobytes()
    with pytest.raises(ImageDecodeError, match="image file not found"):
        resolve_image("b.png", tmp_path)
    records = load_records([{"prompt": "p", "answer": "a", "image": "a.png"}], base_dir=tmp_path,
                           decode_images=False)
    assert records[0]["images"] == [ref]


def test_hostile_rows_are_skipped_and_counted_never_a_crash(tmp_path):
    import os

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    rows = [{"prompt": "p", "answer": "a", "image": value} for value in
            ({"bytes": "abc"}, {"bytes": -1}, {"path": 123}, "/proc/self/mem", str(tmp_path), str(fifo))]
    rows += [{"prompt": "p", "answer": float("nan")}, {"prompt": {"not": "a prompt"}, "answer": "a"},
             {"prompt": "ok", "answer": "a"}]
    records = load_records(rows, on_error="skip")
    assert len(records) == 1 and records.report.num_skipped == 8
    assert records.report.skipped == {"corrupt_image": 6, "invalid_answer": 1, "invalid_prompt": 1}
    with pytest.raises(ImageDecodeError, match="is a directory; expected an image file"):
        decode_image(str(tmp_path))
    with pytest.raises(ImageDecodeError, match="is not a regular file"):
        decode_image(str(fifo))


def test_an_image_file_over_the_cap_is_refused_unread(tmp_path, monkeypatch):
    from sapo_vl.data import images

    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 10)
    with pytest.raises(ImageDecodeError, match=r"a.png is 0 MB; expected at most 0 MB \(SAPO_VL_MAX_IMAGE_MB\)"):
        decode_image(tmp_path / "a.png")
