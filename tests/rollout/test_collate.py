"""Prompt collation: chat template + qwen-vl-utils + processor, images processed once, placeholders checked."""

import pytest
import torch
from PIL import Image

from sapo_vl.rollout import CollateError, PromptFormat, collate_prompts, count_prompt_tokens
from sapo_vl.rollout.collate import IMAGE_PAD
from sapo_vl.models.vision import full_pixel_values
from sapo_vl.rollout.types import Rollout


def _image(w, h, color=(200, 30, 30)):
    return Image.new("RGB", (w, h), color)


def _pad_id(processor):
    return processor.tokenizer.convert_tokens_to_ids(IMAGE_PAD)


def _unpadded(batch, i):
    return batch.input_ids[i][batch.attention_mask[i].bool()].tolist()


RECORDS = [
    {"id": "square", "prompt": "What color is the shape?", "images": [_image(64, 64)]},
    {"id": "text-only", "prompt": "What is two plus two? Answer with one number.", "images": []},
    {"id": "two-images", "images": [_image(96, 48, (0, 90, 200)), _image(32, 80)],
     "prompt": [{"role": "system", "content": "Answer with one word."},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Left or right?"},
                                             {"type": "image"}]}]},
    {"id": "wide", "prompt": "Which shape?", "images": [_image(200, 37, (10, 180, 40))]},
]


def test_string_prompt_with_image_expands_placeholders_to_the_image_features(processor):
    batch = collate_prompts(PromptFormat(processor), RECORDS[:1])
    grid = batch.image_grid_thw
    assert grid.tolist() == [[1, 4, 4]]  # 64x64 pixels, patch 16
    assert batch.pixel_values.shape[0] == 16 and batch.images_per_sample == [1]
    is_pad = batch.input_ids[0] == _pad_id(processor)
    assert int(is_pad.sum()) == 16 // 4  # 2x2 merge
    assert torch.equal(batch.mm_token_type_ids[0].bool(), is_pad)
    text = processor.tokenizer.decode(batch.input_ids[0])
    assert text.index("<|vision_end|>") < text.index("What color is the shape?")
    assert text.endswith("<|im_start|>assistant\n")


def test_message_prompt_with_two_images_keeps_their_order_and_sizes(processor):
    batch = collate_prompts(PromptFormat(processor), [RECORDS[2]])
    assert batch.images_per_sample == [2]
    # 96x48 -> 96x64 pixels; 32x80 is below the 4-token minimum, so it is scaled up to 64x128 (qwen-vl-utils)
    assert batch.image_grid_thw.tolist() == [[1, 4, 6], [1, 8, 4]]
    assert batch.pixel_values.shape[0] == 24 + 32
    text = processor.tokenizer.decode(batch.input_ids[0])
    first, second = text.split("<|vision_start|>")[1:]
    assert first.count(IMAGE_PAD) == 6 and second.count(IMAGE_PAD) == 8
    assert "Left or right?" in first and text.startswith("<|im_start|>system\nAnswer with one word.")


def test_text_only_record_has_no_pixels(processor):
    batch = collate_prompts(PromptFormat(processor), [RECORDS[1]])
    assert batch.pixel_values is None and batch.image_grid_thw is None
    assert batch.images_per_sample == [0]
    assert int(batch.mm_token_type_ids.sum()) == 0
    assert "pixel_values" not in batch.model_inputs()


def test_prompts_are_left_padded_and_each_row_equals_its_own_collation(processor):
    batch = collate_prompts(PromptFormat(processor), RECORDS)
    assert batch.attention_mask[:, -1].all()
    assert not batch.attention_mask[:, 0].all()
    for i, record in enumerate(RECORDS):
        alone = collate_prompts(PromptFormat(processor), [record])
        n = int(batch.attention_mask[i].sum())
        assert batch.attention_mask[i, -n:].all() and not batch.attention_mask[i, :-n].any()
        assert (batch.input_ids[i, :-n] == processor.tokenizer.pad_token_id).all()
        assert _unpadded(batch, i) == alone.input_ids[0].tolist()


def test_min_and_max_pixels_change_the_image_grid(processor):
    record = {"id": "r", "prompt": "Color?", "images": [_image(128, 128)]}
    assert collate_prompts(PromptFormat(processor), [record]).image_grid_thw.tolist() == [[1, 8, 8]]
    small, large = PromptFormat(processor, max_pixels=64 * 64), PromptFormat(processor, min_pixels=192 * 192)
    assert collate_prompts(small, [record]).image_grid_thw.tolist() == [[1, 4, 4]]
    assert collate_prompts(large, [record]).image_grid_thw.tolist() == [[1, 12, 12]]


def test_pixels_equal_qwen_vl_utils_preprocessing_of_the_same_image(processor):
    from qwen_vl_utils import fetch_image

    record = RECORDS[2]
    batch = collate_prompts(PromptFormat(processor), [record])
    expected = processor.image_processor(images=[fetch_image({"image": im}, image_patch_size=16)
                                                 for im in record["images"]], do_resize=False, return_tensors="pt")
    assert torch.equal(batch.image_grid_thw, expected["image_grid_thw"])
    assert torch.equal(batch.pixel_values, expected["pixel_values"])


def test_max_pixels_below_the_default_minimum_is_honoured(processor):
    record = {"id": "r", "prompt": "Color?", "images": [_image(64, 64)]}
    batch = collate_prompts(PromptFormat(processor, max_pixels=32 * 32), [record])
    assert batch.image_grid_thw.tolist() == [[1, 2, 2]]  # one merged token
    assert count_prompt_tokens(PromptFormat(processor, max_pixels=32 * 32), record) == batch.attention_mask.sum()


def test_narrow_image_under_a_small_budget_keeps_at_least_one_patch_row(processor):
    record = {"id": "strip", "prompt": "Color?", "images": [_image(300, 20)]}
    batch = collate_prompts(PromptFormat(processor, max_pixels=64 * 64), [record])
    t, h, w = batch.image_grid_thw[0].tolist()
    assert h == 2 and h * w * 16 * 16 <= 64 * 64  # 32 pixels high, the area within the budget
    assert count_prompt_tokens(PromptFormat(processor, max_pixels=64 * 64), record) == batch.attention_mask.sum()


def test_extreme_aspect_ratio_raises_naming_the_record_and_image(processor):
    record = {"id": "needle", "prompt": "?", "images": [_image(64, 64), _image(3000, 10)]}
    with pytest.raises(CollateError, match=r"'needle', field 'images\[1\]'.*aspect ratio"):
        collate_prompts(PromptFormat(processor), [record])
    with pytest.raises(CollateError, match="needle"):
        count_prompt_tokens(PromptFormat(processor), record)
    almost = {"id": "almost", "prompt": "?", "images": [_image(6500, 33)]}  # 197:1, but 203:1 once rounded
    with pytest.raises(CollateError, match=r"'almost'.*resizes to 6496x32"):
        count_prompt_tokens(PromptFormat(processor), almost)


def test_min_pixels_above_max_pixels_raises(processor):
    with pytest.raises(CollateError, match=r"min_pixels \(4096\) must not exceed max_pixels \(1024\)"):
        collate_prompts(PromptFormat(processor, min_pixels=4096, max_pixels=1024), RECORDS[:1])


@pytest.mark.parametrize("pixels", [{}, {"max_pixels": 48 * 48}, {"min_pixels": 96 * 96}])
def test_count_prompt_tokens_equals_the_collated_length(processor, pixels):
    fmt = PromptFormat(processor, system_prompt="Be brief.", **pixels)
    batch = collate_prompts(fmt, RECORDS)
    lengths = batch.attention_mask.sum(1).tolist()
    assert lengths == [count_prompt_tokens(fmt, r) for r in RECORDS]


def test_more_image_parts_than_images_raises_naming_the_record(processor):
    record = {"id": "rec-17", "images": [_image(64, 64)],
              "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text",
                                                                                              "text": "?"}]}]}
    with pytest.raises(CollateError, match="rec-17.*more image parts than images"):
        collate_prompts(PromptFormat(processor), [RECORDS[0], record])


def test_literal_placeholder_in_prompt_text_raises_naming_the_record(processor):
    record = {"id": "rec-injected", "prompt": f"What is {IMAGE_PAD} here?", "images": []}
    with pytest.raises(CollateError, match="rec-injected.*placeholder"):
        collate_prompts(PromptFormat(processor), [RECORDS[0], record])
    with pytest.raises(CollateError, match="rec-injected.*placeholder"):
        count_prompt_tokens(PromptFormat(processor), record)


class _DroppingProcessor:
    """The real processor, except that its output loses one image placeholder of sample ``row`` (a processor
    whose resize disagrees with qwen-vl-utils produces such a batch)."""

    def __init__(self, processor, row):
        self._processor, self._row = processor, row

    def __getattr__(self, name):
        return getattr(self._processor, name)

    def __call__(self, **kwargs):
        batch = self._processor(**kwargs)
        ids = batch["input_ids"]
        pad = self._processor.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        col = int((ids[self._row] == pad).nonzero()[0])
        ids[self._row, col] = self._processor.tokenizer.convert_tokens_to_ids("a")
        return batch


def test_placeholder_feature_mismatch_raises_naming_the_record(processor):
    with pytest.raises(CollateError, match=r"'two-images' \(batch index 2\).*13 image placeholder tokens but its "
                                           r"2 image\(s\) give 14 features"):
        collate_prompts(PromptFormat(_DroppingProcessor(processor, row=2)), RECORDS)


def _same_images(a, b):
    assert a.images_per_sample == b.images_per_sample
    if b.pixel_values is None:
        assert a.pixel_values is None and a.image_grid_thw is None
        return
    assert torch.equal(a.image_grid_thw, b.image_grid_thw)
    every = [full_pixel_values(x.pixel_values, x.image_grid_thw, x.image_keys) for x in (a, b)]  # all images' rows
    assert torch.equal(*every)


@pytest.mark.parametrize("indices", [[3, 0], [2], [1], [2, 1, 0], [0, 0, 2]])
def test_prompt_batch_select_gathers_the_pixel_rows_of_the_subset(processor, indices):
    batch = collate_prompts(PromptFormat(processor), RECORDS)
    sub = batch.select(indices)
    direct = collate_prompts(PromptFormat(processor), [RECORDS[i] for i in indices])
    _same_images(sub, direct)
    assert [r["id"] for r in sub.records] == [RECORDS[i]["id"] for i in indices]
    for j in range(len(indices)):
        assert _unpadded(sub, j) == _unpadded(direct, j)


def test_prompt_batch_repeat_is_the_group_layout(processor):
    batch = collate_prompts(PromptFormat(processor), RECORDS[:3])
    rep = batch.repeat(2)
    assert [r["id"] for r in rep.records] == ["square", "square", "text-only", "text-only", "two-images",
                                              "two-images"]
    _same_images(rep, batch.select([0, 0, 1, 1, 2, 2]))
    assert rep.image_keys == [0, 0, 1, 2, 1, 2] and rep.images_per_sample == [1, 1, 0, 0, 2, 2]
    assert rep.pixel_values is batch.pixel_values or torch.equal(rep.pixel_values, batch.pixel_values)  # once
    assert rep.model_inputs()["pixel_values"].shape[0] == 2 * batch.pixel_values.shape[0]


def test_repeats_keep_each_distinct_images_pixels_once_and_a_wrong_layout_is_refused(processor):
    batch = collate_prompts(PromptFormat(processor), RECORDS)
    rep = batch.repeat(8)
    assert rep.pixel_values.shape[0] == batch.pixel_values.shape[0]  # G copies, one set of pixels
    sub = rep.select([23, 4, 5])  # record 2 (two images) then record 0 twice: distinct images in that order
    direct = collate_prompts(PromptFormat(processor), [RECORDS[i] for i in (2, 0, 0)])
    assert sub.image_keys == [1, 2, 0, 0]
    assert torch.equal(sub.model_inputs()["pixel_values"], direct.pixel_values)
    keyed = sub.model_inputs(keyed=True)
    assert keyed["image_keys"] == [1, 2, 0, 0] and keyed["pixel_values"].shape[0] < direct.pixel_values.shape[0]
    with pytest.raises(ValueError, match="patch rows, but the 3 distinct images of image_grid_thw need"):
        full_pixel_values(direct.pixel_values, sub.image_grid_thw, sub.image_keys)


def test_rollout_select_gathers_the_pixel_rows_of_the_subset(processor):
    batch = collate_prompts(PromptFormat(processor), RECORDS)
    n, c = len(batch), 3
    rollout = Rollout(
        prompt_ids=batch.input_ids, prompt_mask=batch.attention_mask, prompt_mm_types=batch.mm_token_type_ids,
        completion_ids=torch.arange(n * c).view(n, c), response_mask=torch.ones(n, c, dtype=torch.long),
        truncated=torch.zeros(n, dtype=torch.bool), group_ids=torch.arange(n), pixel_values=batch.pixel_values,
        image_grid_thw=batch.image_grid_thw, images_per_sample=batch.images_per_sample, records=batch.records,
        completions=[f"c{i}" for i in range(n)], old_logprobs=torch.randn(n, c), advantages=torch.arange(n) * 1.0)
    sub = rollout.select([3, 1, 2])
    direct = collate_prompts(PromptFormat(processor), [RECORDS[i] for i in (3, 1, 2)])
    _same_images(sub, direct)
    assert sub.completions == ["c3", "c1", "c2"] and sub.advantages.tolist() == [3.0, 1.0, 2.0]
    assert torch.equal(sub.completion_ids, rollout.completion_ids[[3, 1, 2]])
    assert torch.equal(sub.old_logprobs, rollout.old_logprobs[[3, 1, 2]])
    inputs, _ = sub.model_inputs()  # keyed: distinct images once (distinct here), for policy_forward
    assert inputs["image_keys"] == sub.image_keys and torch.equal(inputs["pixel_values"], direct.pixel_values)
