"""synthetic_shapes: deterministic by seed, balanced, configurable, validated."""

from collections import Counter

import pytest

from sapo_vl.data import build_synthetic_shapes, build_synthetic_shapes_colors, load_dataset_by_name
from sapo_vl.data.synthetic import COLORS
from sapo_vl.errors import DataError

from .helpers import pixels


def fingerprint(records):
    return [(r["id"], r["prompt"], r["answer"], pixels(r["images"][0])) for r in records]


def test_default_task_is_three_colours_one_question_32px():
    records = load_dataset_by_name("synthetic_shapes", n=30)
    assert {r["answer"] for r in records} == {"red", "green", "blue"}
    assert {r["prompt"] for r in records} == {"What color is the shape?"}
    assert all(r["images"][0].size == (32, 32) and r["images"][0].mode == "RGB" for r in records)
    assert all(r["reward"] == "vqa" for r in records)


def test_default_sizes_per_split():
    assert len(build_synthetic_shapes("train")) == 1000
    assert len(build_synthetic_shapes("test")) == 200


def test_same_seed_gives_identical_records_even_with_jitter_and_noise():
    kw = {"n": 24, "num_shapes": 3, "questions": ("color", "shape"), "position_jitter": 0.5, "scale_jitter": 0.2,
          "noise": 8.0}
    assert fingerprint(build_synthetic_shapes(seed=5, **kw)) == fingerprint(build_synthetic_shapes(seed=5, **kw))


def test_different_seed_or_split_gives_different_records():
    base = fingerprint(build_synthetic_shapes(seed=1, n=30))
    assert fingerprint(build_synthetic_shapes(seed=2, n=30)) != base
    assert fingerprint(build_synthetic_shapes("test", seed=1, n=30)) != base


@pytest.mark.parametrize("n", [30, 31, 100])
def test_colour_answers_are_balanced(n):
    counts = Counter(r["answer"] for r in build_synthetic_shapes(n=n, num_colors=3))
    assert max(counts.values()) - min(counts.values()) <= 1 and sum(counts.values()) == n


def test_both_questions_are_balanced_within_each_type():
    records = build_synthetic_shapes(n=90, num_colors=5, num_shapes=3, questions=("color", "shape"))
    by_type = Counter(r["meta"]["question_type"] for r in records)
    assert by_type == {"color": 45, "shape": 45}
    colors = Counter(r["answer"] for r in records if r["meta"]["question_type"] == "color")
    shapes = Counter(r["answer"] for r in records if r["meta"]["question_type"] == "shape")
    assert set(colors.values()) == {9} and set(shapes.values()) == {15}


def test_shape_pixels_carry_the_answer_colour():
    for r in build_synthetic_shapes(n=9, image_size=64):
        assert r["images"][0].getpixel((32, 32)) == COLORS[r["answer"]]
        assert r["images"][0].getpixel((0, 0)) == COLORS["white"]


def test_explicit_colours_and_image_size():
    records = build_synthetic_shapes(n=8, colors=["yellow", "black"], image_size=48)
    assert {r["answer"] for r in records} == {"yellow", "black"}
    assert records[0]["images"][0].size == (48, 48)


def test_prompt_template_is_applied():
    (record,) = build_synthetic_shapes(n=1, prompt_template="{prompt} One word.")
    assert record["prompt"] == "What color is the shape? One word."


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"image_size": 16}, ">= 32"),
    ({"questions": ("shape",)}, "at least 2 shapes"),
    ({"colors": ["red", "mauve"]}, "unknown colour"),
    ({"colors": ["red", "white"]}, "background"),
    ({"shapes": ["hexagon"]}, "unknown shape"),
    ({"questions": ("size",)}, "questions must be"),
])
def test_invalid_options_are_rejected(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        build_synthetic_shapes(n=4, **kwargs)


def test_unknown_option_lists_known_ones():
    with pytest.raises(DataError, match="known:.*num_colors"):
        build_synthetic_shapes(n=4, num_colours=4)


def test_shapes_colors_answer_names_every_shape_colour_in_reading_order():
    records = load_dataset_by_name("synthetic_shapes_colors", n=6, image_size=64)
    for r in records:
        image, colors = r["images"][0], r["meta"]["colors"]
        assert image.size == (3 * 64, 3 * 64) and len(colors) == 9 and r["reward"] == "ordered_words"
        assert r["answer"] == ", ".join(colors)
        centres = [image.getpixel((64 * (j % 3) + 32, 64 * (j // 3) + 32)) for j in range(9)]  # rows, then columns
        assert centres == [COLORS[c] for c in colors]


def test_shapes_colors_answers_take_at_least_16_tokens_of_the_tiny_tokenizer():
    from sapo_vl.models.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    for kwargs in ({}, {"num_colors": 5}):
        lengths = {len(tokenizer(r["answer"])["input_ids"]) for r in build_synthetic_shapes_colors(n=50, **kwargs)}
        assert min(lengths) >= 16, lengths  # 9 colours and 8 commas: 17 tokens, the end-of-turn token aside


def test_shapes_colors_splits_differ_and_a_seed_repeats():
    def answers(split, seed):
        return [r["answer"] for r in build_synthetic_shapes_colors(split, n=20, seed=seed)]

    assert answers("train", 3) == answers("train", 3) and answers("train", 3) != answers("test", 3)
    assert len(build_synthetic_shapes_colors("test")) == 200


def test_shapes_colors_bad_options_are_clear_errors():
    with pytest.raises(DataError, match="needs 1 <= columns <= count"):
        build_synthetic_shapes_colors(count=2, columns=3)
    with pytest.raises(DataError, match=r"synthetic_shapes_colors got unknown option\(s\) \['questions'\]"):
        build_synthetic_shapes_colors(questions=("shape",))
