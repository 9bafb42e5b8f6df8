"""easy_vqa from the easy-vqa pip package: counts, question-type filtering, determinism."""

from collections import Counter

import easy_vqa
import pytest

from sapo_vl.data import build_easy_vqa, classify_question, load_dataset_by_name

COLORS = {"red", "green", "blue", "black", "gray", "teal", "brown", "yellow"}
SHAPES = {"circle", "rectangle", "triangle"}


def answer_kind(answer):
    return "color" if answer in COLORS else "shape" if answer in SHAPES else "yes_no"


def test_classifier_agrees_with_answer_kind_on_every_question():
    for texts, answers, _ in (easy_vqa.get_train_questions(), easy_vqa.get_test_questions()):
        mismatches = [(t, a) for t, a in zip(texts, answers) if classify_question(t) != answer_kind(a)]
        assert not mismatches, mismatches[:5]


def test_package_holds_the_documented_sizes():
    assert len(easy_vqa.get_train_image_paths()) == 4000
    assert len(easy_vqa.get_test_image_paths()) == 1000
    assert len(easy_vqa.get_answers()) == 13


def test_limit_gives_that_many_records_with_64px_rgb_images():
    records = load_dataset_by_name("easy_vqa", split="test", limit=25)
    assert len(records) == 25
    assert len({r["id"] for r in records}) == 25
    assert all(r["images"][0].size == (64, 64) and r["images"][0].mode == "RGB" for r in records)
    assert all(r["reward"] == "vqa" and r["answer"] in COLORS | SHAPES | {"yes", "no"} for r in records)


@pytest.mark.parametrize(("types", "kinds"), [("color", {"color"}), (["shape"], {"shape"}),
                                              (("colour", "yes_no"), {"color", "yes_no"})])
def test_question_type_filter_keeps_only_those_types(types, kinds):
    records = build_easy_vqa("test", question_types=types, limit=60)
    assert len(records) == 60
    assert {answer_kind(r["answer"]) for r in records} == kinds
    assert {r["meta"]["question_type"] for r in records} == kinds


def test_full_test_split_color_questions_count():
    _, answers, _ = easy_vqa.get_test_questions()
    expected = sum(answer_kind(a) == "color" for a in answers)
    assert len(build_easy_vqa("test", question_types="color")) == expected


def test_same_seed_same_subset_other_seed_other_subset():
    def ids(seed):
        return [r["id"] for r in build_easy_vqa("test", limit=20, seed=seed)]

    assert ids(3) == ids(3)
    assert ids(3) != ids(4)


def test_no_shuffle_keeps_file_order_and_ids_are_question_indices():
    texts, answers, _ = easy_vqa.get_test_questions()
    records = build_easy_vqa("test", limit=3, shuffle=False, prompt_template="{question}")
    assert [r["id"] for r in records] == ["easy_vqa-test-0", "easy_vqa-test-1", "easy_vqa-test-2"]
    assert [r["answer"] for r in records] == answers[:3]
    assert records[0]["prompt"].lower() == texts[0]


def test_records_of_one_image_share_the_decoded_image():
    records = build_easy_vqa("test", limit=30, shuffle=False)
    by_image = Counter(r["meta"]["image_id"] for r in records)
    image_id = by_image.most_common(1)[0][0]
    same = [r["images"][0] for r in records if r["meta"]["image_id"] == image_id]
    assert len(same) > 1 and all(im is same[0] for im in same)


def test_unknown_question_type_and_split_are_rejected():
    with pytest.raises(ValueError, match="known: \\('color', 'shape', 'yes_no'\\)"):
        build_easy_vqa("test", question_types="size")
    with pytest.raises(ValueError, match="splits"):
        build_easy_vqa("validation")
