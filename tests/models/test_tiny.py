"""The offline tiny Qwen3-VL(-MoE): build, save, reload the HF way, forward/backward with an image, generation."""

import json

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from sapo_vl.config import ModelConfig
from sapo_vl.models import load_policy, policy_forward
from sapo_vl.models.tiny import VISION_SPECIAL_TOKENS, TinyConfig, build_tiny, make_tiny_model, mrope_section


def _image_batch(processor, sizes=((64, 64), (32, 48))):
    images = [Image.new("RGB", s, (40 * i, 200, 90)) for i, s in enumerate(sizes)]
    msgs = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"What color {i}?"}]}]
            for i in range(len(images))]
    texts = [processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in msgs]
    return processor(text=texts, images=images, return_tensors="pt", padding=True)


def test_tiny_checkpoint_reloads_through_auto_classes_with_identical_weights(tiny_dir):
    model = AutoModelForImageTextToText.from_pretrained(str(tiny_dir))
    processor = AutoProcessor.from_pretrained(str(tiny_dir))
    assert type(model).__name__ == "Qwen3VLMoeForConditionalGeneration"
    assert type(processor).__name__ == "Qwen3VLProcessor"
    again, _ = build_tiny(TinyConfig(seed=0))
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    assert (tiny_dir / "model.safetensors").is_file()


def test_tiny_build_is_deterministic_by_seed_and_differs_across_seeds():
    a, _ = build_tiny(TinyConfig(seed=1))
    b, _ = build_tiny(TinyConfig(seed=1))
    c, _ = build_tiny(TinyConfig(seed=2))
    wa, wb, wc = (m.lm_head.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_tiny_build_leaves_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny(TinyConfig(seed=5))
    assert torch.equal(torch.rand(3), expected)


def test_tokenizer_has_qwen_chat_tokens_and_template_places_image_pads(tiny_dir):
    processor = AutoProcessor.from_pretrained(str(tiny_dir))
    tok = processor.tokenizer
    for t in ["<|im_start|>", "<|im_end|>", "<think>", "</think>", *VISION_SPECIAL_TOKENS]:
        assert tok.convert_tokens_to_ids(t) != tok.unk_token_id, t
    assert 900 <= len(tok) <= 1100
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n"
    batch = _image_batch(processor, sizes=((64, 64),))
    n_pad = int((batch["input_ids"] == tok.convert_tokens_to_ids("<|image_pad|>")).sum())
    assert n_pad == int(batch["image_grid_thw"].prod(-1).sum()) // 4 == 4


def test_forward_backward_with_image_has_moe_aux_loss_and_grads_everywhere(tiny_dir):
    model, processor = load_policy(tiny_dir)
    batch = _image_batch(processor)
    out = model(**batch, output_router_logits=True)
    assert out.aux_loss is not None and torch.isfinite(out.aux_loss)
    (out.logits.float().logsumexp(-1).mean() + out.aux_loss).backward()
    assert model.model.visual.patch_embed.proj.weight.grad is not None
    assert model.model.language_model.layers[0].mlp.gate.weight.grad.abs().sum() > 0


def test_batched_generation_with_left_padding_matches_single_prompt_generation(tiny_dir):
    model, processor = load_policy(tiny_dir)
    batch = _image_batch(processor)
    assert batch["attention_mask"][1, 0] == 0  # the shorter prompt is left padded
    kw = dict(max_new_tokens=6, do_sample=False)
    both = model.generate(**batch, **kw)[:, batch["input_ids"].shape[1]:]
    single = _image_batch(processor, sizes=((32, 48),))
    # the second prompt's text differs ("What color 0?" vs "1?"), so rebuild it exactly
    images = [Image.new("RGB", (32, 48), (40, 200, 90))]
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color 1?"}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    single = processor(text=[text], images=images, return_tensors="pt")
    alone = model.generate(**single, **kw)[:, single["input_ids"].shape[1]:]
    assert torch.equal(both[1], alone[0])


def test_generate_logprobs_equal_padded_reforward(tiny_dir):
    model, processor = load_policy(tiny_dir)
    batch = _image_batch(processor)
    torch.manual_seed(0)
    gen = model.generate(**batch, max_new_tokens=5, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                         output_logits=True, return_dict_in_generate=True)
    P = batch["input_ids"].shape[1]
    comp = gen.sequences[:, P:]
    gen_lp = torch.stack(gen.logits, 1).float().log_softmax(-1).gather(-1, comp[..., None])[..., 0]
    inputs = dict(batch, input_ids=gen.sequences,
                  attention_mask=torch.cat([batch["attention_mask"], torch.ones_like(comp)], 1),
                  mm_token_type_ids=torch.cat([batch["mm_token_type_ids"], torch.zeros_like(comp)], 1))
    with torch.no_grad():
        fwd = policy_forward(model, inputs, P)
    assert torch.allclose(fwd.logprobs, gen_lp, atol=1e-5)


def test_dense_variant_builds_and_runs(tmp_path):
    out = make_tiny_model(tmp_path / "dense", TinyConfig(moe=False))
    model, processor = load_policy(out)
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert json.loads((out / "config.json").read_text())["model_type"] == "qwen3_vl"
    fwd = policy_forward(model, dict(_image_batch(processor)), 10)
    assert fwd.aux_loss is None and fwd.router_logits is None


def test_make_tiny_model_builds_a_model_of_real_size_in_one_command(tmp_path, capsys):
    """The 156M-parameter dense model of the memory measurements: hidden 1024, 12 layers, MLP width 4096 (run here
    at a quarter of the layers and width, same code path)."""
    from transformers import AutoConfig

    from sapo_vl.cli import main

    out = tmp_path / "m"
    assert main(["make-tiny-model", str(out), "--dense", "--hidden-size", "256", "--layers", "3",
                 "--intermediate-size", "1024"]) == 0
    text = AutoConfig.from_pretrained(out).text_config
    assert (text.hidden_size, text.num_hidden_layers, text.intermediate_size) == (256, 3, 1024)
    assert "wrote tiny dense Qwen3-VL" in capsys.readouterr().out


def test_mrope_section_sums_to_half_head_dim():
    for head_dim in (16, 32, 64, 128):
        assert sum(mrope_section(head_dim)) == head_dim // 2
    assert mrope_section(128) == [24, 20, 20]


def test_freeze_vision_and_invalid_tiny_sizes_are_rejected(tiny_dir):
    model, _ = load_policy(tiny_dir, ModelConfig(freeze_vision=True))
    assert not any(p.requires_grad for p in model.model.visual.parameters())
    assert any(p.requires_grad for p in model.model.language_model.parameters())
    import pytest

    with pytest.raises(ValueError, match="perfect square"):
        TinyConfig(vision_num_position_embeddings=60).validate()
    with pytest.raises(ValueError, match="deepstack"):
        TinyConfig(deepstack_visual_indexes=[5]).validate()
