"""Fused decoding: each new token's logits are the model's own (a full forward over prompt + tokens so far), float
rounding apart, for the MoE and dense tiny models, left-padded prompts with images of different sizes or none."""

import pytest
import torch
from PIL import Image
from transformers import DynamicCache

from sapo_vl.models.decode import FusedDecoder, LayerDecoder, fused_decoding_supported
from sapo_vl.models.load import load_policy
from sapo_vl.models.packing import position_ids
from sapo_vl.models.prefix import cache_kwarg
from sapo_vl.models.tiny import TinyConfig, make_tiny_model
from sapo_vl.rollout import PromptFormat, collate_prompts

RECORDS = [
    {"id": "a", "prompt": "What color is the shape?", "images": [Image.new("RGB", (64, 64), (200, 30, 30))]},
    {"id": "b", "prompt": "<image> or <image>?", "images": [Image.new("RGB", (96, 48), (30, 200, 30)),
                                                         Image.new("RGB", (32, 32), (30, 30, 200))]},
    {"id": "c", "prompt": "No picture here, just say a colour, please."},
]
N, STEPS = 3, 7  # completions per prompt, tokens fed after the prefill


@pytest.fixture(scope="module", params=["moe", "dense"])
def policy(request, tiny_dir, tmp_path_factory):
    path = tiny_dir if request.param == "moe" else make_tiny_model(tmp_path_factory.mktemp("dense"),
                                                                   TinyConfig(moe=False))
    model, processor = load_policy(path)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the tiny model's RMSNorm weights are all ones: make each one count
        for name, p in model.model.language_model.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand(p.shape, generator=generator) + 0.5)
    return model.eval(), processor


def _prefill(model, inputs):
    position = position_ids(model, inputs)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        out = model(**inputs, position_ids=position, use_cache=True, logits_to_keep=1, **{cache_kwarg(model): cache})
    return out.logits[:, -1].float(), cache, position[..., -1:]


def _full_forward_logits(model, inputs, tokens):
    """The oracle: one forward over each row's prompt and its first t fed tokens, the logits after each."""
    rows = {k: v.repeat_interleave(N, 0) if k in ("input_ids", "attention_mask", "mm_token_type_ids") else v
            for k, v in inputs.items()}
    rows["pixel_values"], rows["image_grid_thw"] = inputs["pixel_values"], inputs["image_grid_thw"]
    # prompt b's images belong to rows 3..5 now: rebuild the image inputs row by row
    per_prompt = inputs["image_grid_thw"].split([1, 2])
    patches = [int(g.prod(-1).sum()) for g in per_prompt]
    pixels = inputs["pixel_values"].split(patches)
    rows["image_grid_thw"] = torch.cat([per_prompt[0]] * N + [per_prompt[1]] * N)
    rows["pixel_values"] = torch.cat([pixels[0]] * N + [pixels[1]] * N)
    full = dict(rows)
    full["input_ids"] = torch.cat([rows["input_ids"], tokens], 1)
    full["attention_mask"] = torch.cat([rows["attention_mask"], torch.ones_like(tokens)], 1)
    full["mm_token_type_ids"] = torch.cat([rows["mm_token_type_ids"], torch.zeros_like(tokens)], 1)
    with torch.no_grad():
        logits = model(**full, position_ids=position_ids(model, full)).logits.float()
    return logits[:, -tokens.shape[1] - 1:]  # after the prompt, then after each fed token


def _fed_logits(model, inputs, tokens) -> dict:
    """Each decoder's logits after the prefill, then after each fed token: (3 * N, 1 + STEPS, V)."""
    out = {}
    for decoder in (FusedDecoder, LayerDecoder):
        first, cache, position = _prefill(model, inputs)
        feed = decoder(model, cache, inputs["attention_mask"], position, N, STEPS)
        with torch.no_grad():
            out[decoder] = torch.stack([first.repeat_interleave(N, 0)] + [feed(tokens[:, t]) for t in range(STEPS)], 1)
    return out


def test_fused_decoding_gives_the_logits_of_a_full_forward_over_prompt_and_tokens(policy):
    model, processor = policy
    assert fused_decoding_supported(model)
    inputs = collate_prompts(PromptFormat(processor), RECORDS).model_inputs(keyed=False)
    assert len(set(inputs["attention_mask"].sum(1).tolist())) == 3  # left padding on two prompts
    torch.manual_seed(0)
    tokens = torch.randint(0, 900, (3 * N, STEPS))
    expected = _full_forward_logits(model, inputs, tokens)
    for decoder, got in _fed_logits(model, inputs, tokens).items():
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5, msg=decoder.__name__)
    assert not torch.equal(expected[:, 1], expected[:, 2])  # the fed tokens change the logits


def test_fused_decoding_writes_each_token_into_buffers_sized_once(policy):
    model, processor = policy
    inputs = collate_prompts(PromptFormat(processor), RECORDS[:2]).model_inputs(keyed=False)
    _, cache, position = _prefill(model, inputs)
    P = inputs["input_ids"].shape[1]
    prompt_keys = cache.layers[0].keys.clone()
    feed = FusedDecoder(model, cache, inputs["attention_mask"], position, N, STEPS)
    storage = [k.data_ptr() for k in feed.keys]
    assert feed.keys[0].shape == (2 * N, prompt_keys.shape[1], P + STEPS, prompt_keys.shape[3])
    with torch.no_grad():
        for t in range(STEPS):
            feed(torch.full((2 * N,), 5 + t))
    assert [k.data_ptr() for k in feed.keys] == storage and feed.length == P + STEPS
    assert torch.equal(feed.keys[0][:, :, :P], prompt_keys.repeat_interleave(N, 0))  # the prompt's, kept
    # the rows of one prompt were fed the same tokens: the same keys
    assert torch.equal(feed.keys[-1][0], feed.keys[-1][N - 1]) and not torch.equal(feed.keys[-1][0], feed.keys[-1][N])


def test_fused_decoding_in_bfloat16_stays_within_bfloat16_rounding_of_the_layer_calls(policy):
    model, processor = policy
    model = model.to(torch.bfloat16)
    try:
        inputs = collate_prompts(PromptFormat(processor), RECORDS).model_inputs(keyed=False)
        inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
        tokens = torch.randint(0, 900, (3 * N, STEPS), generator=torch.Generator().manual_seed(1))
        got = _fed_logits(model, inputs, tokens)
        assert got[FusedDecoder].dtype == torch.float32
        scale = got[LayerDecoder].abs().max()
        assert (got[FusedDecoder] - got[LayerDecoder]).abs().max() <= 0.03 * scale
    finally:
        model.float()


def test_fused_decoding_waits_for_gathered_weights_a_sharded_one_means_the_layer_calls(policy, tmp_path):
    """Under FSDP2 a layer not kept gathered holds DTensor weights between calls: the layer calls must gather it."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, distribute_tensor

    model, _ = policy
    assert fused_decoding_supported(model)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    proj = model.model.language_model.layers[-1].self_attn.o_proj
    plain = proj.weight
    try:
        mesh = init_device_mesh("cpu", (1,))
        proj.weight = torch.nn.Parameter(distribute_tensor(plain.detach(), mesh, [Replicate()]))
        assert not fused_decoding_supported(model)
    finally:
        proj.weight = plain
        dist.destroy_process_group()
    assert fused_decoding_supported(model)
