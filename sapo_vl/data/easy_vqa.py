"""``easy_vqa``: the easy-VQA data set shipped inside the ``easy-vqa`` pip package (1.0), fully offline.

64x64 RGB PNGs of one shape (circle / rectangle / triangle) in one of 8 colours; 4,000 train and 1,000 test
images with 38,575 / 9,673 questions and 13 possible answers (3 shapes, 8 colours, yes, no). One record per
question; records of the same image share one decoded PIL image.

Question types, classified from the question text (``classify_question``):
- "color":  "what color is the shape?", "what is the color of the circle?" ...  -> a colour
- "shape":  "what shape is in the image?", "what is the blue shape?" ...         -> a shape
- "yes_no": "is there a red shape?", "does the image not contain a circle?" ...  -> yes / no
"""

from __future__ import annotations

import easy_vqa
import numpy as np

from sapo_vl.data.images import decode_image
from sapo_vl.data.records import LoadReport, Records, render_template
from sapo_vl.errors import DataError

__all__ = ["QUESTION_TYPES", "SPLITS", "build_easy_vqa", "classify_question"]

QUESTION_TYPES = ("color", "shape", "yes_no")
SPLITS = ("train", "test")
DEFAULT_TEMPLATE = "{question} Answer with a single word."
_ALIASES = {"colour": "color", "yesno": "yes_no", "yes/no": "yes_no"}


def classify_question(text: str) -> str:
    """"yes_no" for is/does questions, "color" when a what-question asks for a colour, else "shape"."""
    words = text.strip().lower().split()
    if not words:
        raise ValueError("empty easy_vqa question")
    if words[0] in ("is", "does"):
        return "yes_no"
    if words[0] != "what":
        raise ValueError(f"unrecognised easy_vqa question {text!r}: expected it to start with is/does/what")
    return "color" if "color" in words or "colour" in words else "shape"


def _question_types(question_types) -> tuple[str, ...]:
    if question_types is None:
        return QUESTION_TYPES
    if isinstance(question_types, str):
        question_types = (question_types,)
    types = tuple(_ALIASES.get(t, t) for t in question_types)
    bad = [t for t in types if t not in QUESTION_TYPES]
    if bad or not types:
        raise DataError(f"unknown easy_vqa question type(s) {bad or question_types}; known: {QUESTION_TYPES}")
    return types


def _read_split(split: str):
    if split not in SPLITS:
        raise DataError(f"easy_vqa has splits {SPLITS}, got {split!r}")
    if split == "train":
        return easy_vqa.get_train_questions(), easy_vqa.get_train_image_paths()
    return easy_vqa.get_test_questions(), easy_vqa.get_test_image_paths()


def build_easy_vqa(
    split: str = "train",
    *,
    question_types=None,
    limit: int | None = None,
    seed: int = 0,
    shuffle: bool = True,
    prompt_template: str = DEFAULT_TEMPLATE,
) -> Records:
    """Records for one split: prompt = ``prompt_template.format(question=<capitalised question>)``, one 64x64
    image, the answer word,
    reward "vqa", meta ``{"question_type", "image_id", "question"}``, id ``easy_vqa-<split>-<question index>``
    (stable under filtering and shuffling).

    ``question_types``: keep only these ("color", "shape", "yes_no"). ``shuffle``: permute by ``seed`` before
    ``limit`` takes the first records (so a limit is a seeded random subset); ``shuffle=False`` keeps file order.
    """
    types = _question_types(question_types)
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}")
    (texts, answers, image_ids), paths = _read_split(split)
    order = np.random.default_rng(seed).permutation(len(texts)) if shuffle else np.arange(len(texts))
    cache: dict[int, object] = {}
    records = []
    for i in order.tolist():
        if limit is not None and len(records) >= limit:
            break
        qtype = classify_question(texts[i])
        if qtype not in types:
            continue
        image_id = image_ids[i]
        if image_id not in cache:
            if image_id not in paths:
                raise FileNotFoundError(f"easy_vqa {split} question {i} refers to missing image {image_id}.png")
            cache[image_id] = decode_image(paths[image_id])
        records.append({
            "id": f"easy_vqa-{split}-{i}",
            "prompt": render_template(prompt_template, {"question": texts[i][:1].upper() + texts[i][1:]}),
            "images": [cache[image_id]],
            "answer": answers[i],
            "reward": "vqa",
            "meta": {"question_type": qtype, "image_id": image_id, "question": texts[i]},
        })
    return Records(records, LoadReport(source=f"easy_vqa[{split}]", total=len(texts), seen=len(records),
                                       kept=len(records)))
