"""Validation and on_error handling: clear errors naming record, id and field; counted, logged skips."""

import json
import logging

import pytest
from PIL import Image

from sapo_vl.data import RecordError, check_prompt_length, load_records, normalize_record

from .helpers import pixels

GOOD = {"prompt": "What color is the shape?", "images": "images/red_square.png", "answer": "red"}

# name -> (bad row placed at index 1 with id "bad-1", reason, field named in the error, expectation phrase)
BAD_ROWS = {
    "missing_image": ({"images": ["images/red_square.png", "images/nope.png"]}, "missing_image", "images[1]",
                      "not found"),
    "corrupt_image": ({"images": "data:image/png;base64,aGVsbG8="}, "corrupt_image", "images[0]", "cannot decode"),
    "missing_answer": ({"answer": None}, "missing_answer", "answer", "expected a str, a number"),
    "empty_answer": ({"answer": "  "}, "missing_answer", "answer", "missing or empty answer"),
    "invalid_answer": ({"answer": {"a": 1}}, "invalid_answer", "answer", "expected a str or a number"),
    "missing_prompt": ({"prompt": ""}, "missing_prompt", "prompt", "expected a str or a list of chat messages"),
    "bad_message": ({"prompt": [{"role": "robot", "content": "hi"}]}, "invalid_prompt", "prompt[0]", "'role'"),
    "bad_meta": ({"meta": "x"}, "invalid_field", "meta", "expected a dict"),
    "bad_reward": ({"reward": 3}, "invalid_field", "reward", "reward function name"),
}


def write_rows(tmp_path, fixture_dir, bad_overrides):
    rows = [{**GOOD, "id": "ok-0"}, {**GOOD, **bad_overrides, "id": "bad-1"}, {**GOOD, "id": "ok-2"}]
    out = tmp_path / "rows.jsonl"
    out.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return out


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_record_raises_naming_index_id_and_field(case, tmp_path, fixture_dir):
    overrides, reason, field, expectation = BAD_ROWS[case]
    path = write_rows(tmp_path, fixture_dir, overrides)
    with pytest.raises(RecordError) as info:
        load_records(path, base_dir=fixture_dir)
    msg = str(info.value)
    assert "record 1" in msg and "'bad-1'" in msg and f"field {field!r}" in msg, msg
    assert expectation in msg, msg
    assert (info.value.reason, info.value.index, info.value.record_id, info.value.field) == (
        reason, 1, "bad-1", field)


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_record_with_skip_is_counted_and_logged(case, tmp_path, fixture_dir, caplog):
    overrides, reason, _, _ = BAD_ROWS[case]
    path = write_rows(tmp_path, fixture_dir, overrides)
    with caplog.at_level(logging.WARNING, logger="sapo_vl.data"):
        records = load_records(path, on_error="skip", base_dir=fixture_dir)
    assert [r["id"] for r in records] == ["ok-0", "ok-2"]
    assert records.report.skipped == {reason: 1}
    assert (records.report.seen, records.report.kept) == (3, 2)
    assert f"{reason}: 1" in caplog.text and "bad-1" in caplog.text


def test_skip_counts_accumulate_per_reason(fixture_dir):
    rows = [{"prompt": "p", "answer": None}, {"prompt": "", "answer": "a"}, {"prompt": "q", "answer": None},
            {"prompt": "ok", "answer": "a"}]
    records = load_records(rows, on_error="skip")
    assert len(records) == 1
    assert records.report.skipped == {"missing_answer": 2, "missing_prompt": 1}


def test_invalid_json_line_names_the_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "p", "answer": "a"}\n{not json\n')
    with pytest.raises(RecordError, match=r"record 1.*line 2"):
        load_records(path)
    assert load_records(path, on_error="skip").report.skipped == {"invalid_json": 1}


def test_duplicate_id_is_an_error_naming_the_first_use():
    rows = [{"id": "x", "prompt": "p", "answer": "a"}, {"id": "x", "prompt": "q", "answer": "b"}]
    with pytest.raises(RecordError, match=r"record 1 \(id 'x'\), field 'id'.*record 0"):
        load_records(rows)
    assert load_records(rows, on_error="skip").report.skipped == {"duplicate_id": 1}


def test_answer_free_data_loads_with_require_answer_false():
    (record,) = load_records([{"prompt": "Describe the image."}], require_answer=False)
    assert record["answer"] is None


def test_on_error_value_is_checked():
    with pytest.raises(ValueError, match="on_error"):
        load_records([], on_error="ignore")


def count_words(record):
    return len(record["prompt"].split())


def test_prompt_over_max_length_raises_naming_record():
    rows = [{"id": "short", "prompt": "one two", "answer": "a"}, {"id": "long", "prompt": "a b c d e", "answer": "b"}]
    with pytest.raises(RecordError) as info:
        check_prompt_length(load_records(rows), count_words, max_prompt_length=3)
    msg = str(info.value)
    assert "record 1" in msg and "'long'" in msg and "field 'prompt'" in msg and "5 tokens" in msg


def test_prompt_over_max_length_skip_extends_the_load_report():
    rows = [{"prompt": "", "answer": "a"}, {"prompt": "one two", "answer": "a"}, {"prompt": "a b c d e", "answer": "b"}]
    records = check_prompt_length(load_records(rows, on_error="skip"), count_words, 3, on_error="skip")
    assert [r["prompt"] for r in records] == ["one two"]
    assert records.report.skipped == {"missing_prompt": 1, "prompt_too_long": 1}


def test_check_prompt_length_works_on_plain_lists():
    records = [{"id": "a", "prompt": "x " * 10}, {"id": "b", "prompt": "x"}]
    kept = check_prompt_length(records, count_words, max_prompt_length=5, on_error="skip")
    assert [r["id"] for r in kept] == ["b"] and kept.report.skipped == {"prompt_too_long": 1}


def test_an_unknown_load_option_is_named_with_the_closest_known_one():
    with pytest.raises(ValueError, match=r"unknown record option\(s\) \['prompt_feild'\] \(did you mean "
                                         r"prompt_field\?\)"):
        load_records([], prompt_feild="question")


# ------------------------------------------------------------------------------------------- message prompts


def test_message_prompt_without_image_parts_gets_placeholders(red_square):
    raw = {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Color?"}],
           "images": [red_square, red_square], "answer": "red"}
    record = normalize_record(raw, 0)
    assert record["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert record["prompt"][1]["content"] == [{"type": "image"}, {"type": "image"},
                                              {"type": "text", "text": "Color?"}]


def test_images_embedded_in_parts_move_to_images_in_order(fixture_dir, red_square):
    raw = {"prompt": [{"role": "user", "content": [
        {"type": "image", "image": "images/blue_circle.png"}, {"type": "text", "text": "vs"},
        {"type": "image", "image": red_square}]}], "answer": "x"}
    from sapo_vl.data.records import RecordSpec

    record = normalize_record(raw, 0, RecordSpec(base_dir=fixture_dir))
    assert [p["type"] for p in record["prompt"][0]["content"]] == ["image", "text", "image"]
    assert all(set(p) == {"type"} for p in record["prompt"][0]["content"] if p["type"] == "image")
    assert pixels(record["images"][1]) == pixels(red_square)
    assert record["images"][0].getpixel((16, 16)) == (40, 80, 220)


def test_image_part_count_must_match_images(red_square):
    raw = {"id": "m", "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}],
           "images": [red_square, red_square], "answer": "x"}
    with pytest.raises(RecordError, match=r"record 4 \(id 'm'\), field 'images'.*2 images"):
        normalize_record(raw, 4)


def test_message_prompt_needs_a_user_message():
    with pytest.raises(RecordError, match="'user' message"):
        normalize_record({"prompt": [{"role": "system", "content": "x"}], "answer": "a"}, 0)


def test_bad_embedded_image_names_the_part(tmp_path):
    raw = {"id": "e", "prompt": [{"role": "user", "content": [{"type": "image", "image": "gone.png"}]}],
           "answer": "a"}
    with pytest.raises(RecordError, match=r"field 'prompt\[0\].content\[0\]'.*not found"):
        normalize_record(raw, 0)


def test_normalised_record_is_accepted_again_unchanged(fixture_jsonl):
    record = load_records(fixture_jsonl)[3]
    again = normalize_record(record, 3)
    assert again["id"] == record["id"] and again["prompt"] == record["prompt"]
    assert [pixels(i) for i in again["images"]] == [pixels(i) for i in record["images"]]
    assert isinstance(again["images"][0], Image.Image)
