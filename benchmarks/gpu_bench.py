"""GPU benchmark, ready to run on one H100 / H200: rollout and training tokens/s, MFU and peak memory of shape-true,
random-weight Qwen3-VL models built from their published configs (recipes/models/*.json), in bf16 with the fastest
attention and expert kernels installed. No downloads, no processor: prompts are random text around one image's
placeholder tokens, with random pixels of the right shape.

    python benchmarks/gpu_bench.py                         # Qwen3-VL-2B (dense) and 30B-A3B (MoE, 8 layers)
    python benchmarks/gpu_bench.py --models 30b-a3b --moe-layers 12 --new-tokens 512
    python benchmarks/gpu_bench.py --device cpu --tiny     # the code path on a CPU, in seconds

MFU counts, per token, 2 x active parameters forward (6 x for training: forward + backward), attention's 4 x layers x
hidden x context (x3 for training) and the vision tower's 2 x (6 x) vision parameters per patch, against the chip's
dense bf16 peak (989 TFLOP/s for H100 SXM and H200). Rollout tokens are generated tokens; training tokens are prompt +
completion tokens of the update's forward and backward.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import sapo_vl  # noqa: F401  (torchvision compat before transformers)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"2b": "Qwen3-VL-2B-Instruct.json", "30b-a3b": "Qwen3-VL-30B-A3B-Instruct.json"}
PEAK_BF16 = 989e12


def build(name: str, args) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForImageTextToText

    from sapo_vl.models.vision import patch_embed_as_linear

    if args.tiny:
        from sapo_vl.models.tiny import TinyConfig, build_model_config, build_tokenizer

        config = build_model_config(TinyConfig(moe=name != "2b"), build_tokenizer(1024, 0))
    else:
        raw = json.loads((ROOT / "recipes" / "models" / CONFIGS[name]).read_text())
        config = AutoConfig.for_model(**raw)
        if getattr(config.text_config, "num_experts", 0):
            config.text_config.num_hidden_layers = args.moe_layers  # 48 layers of 30B-A3B do not train on one GPU
    kwargs = {"dtype": torch.bfloat16 if args.device == "cuda" else torch.float32,
              "attn_implementation": fastest_attention(args.device)}
    if getattr(config.text_config, "num_experts", 0):
        kwargs["experts_implementation"] = "grouped_mm" if args.device == "cuda" else "eager"
    with torch.device(args.device):
        model = AutoModelForImageTextToText.from_config(config, **kwargs)
    patch_embed_as_linear(model)  # as load_policy does
    return model


def fastest_attention(device: str) -> str:
    import importlib.util

    return "flash_attention_2" if device == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"


def prompts(model, args):
    """A PromptBatch of random text around one image per prompt (pixels of the right shape, random)."""
    from sapo_vl.rollout.types import PromptBatch

    cfg, vis = model.config, model.config.vision_config
    side = args.image_px // vis.patch_size
    per_image = side * side // vis.spatial_merge_size ** 2
    vocab = cfg.text_config.vocab_size
    text = torch.randint(10, int(vocab * 0.9), (args.prompts, args.prompt_tokens))  # below the special tokens
    image = torch.full((args.prompts, per_image), cfg.image_token_id)
    start = torch.full((args.prompts, 1), cfg.vision_start_token_id)
    end = torch.full((args.prompts, 1), cfg.vision_end_token_id)
    ids = torch.cat([start, image, end, text], 1)
    mm = torch.cat([torch.zeros_like(start), torch.ones_like(image), torch.zeros_like(end), torch.zeros_like(text)], 1)
    patch_dim = vis.in_channels * vis.temporal_patch_size * vis.patch_size ** 2
    pixels = torch.randn(args.prompts * side * side, patch_dim)
    grid = torch.tensor([[1, side, side]] * args.prompts)
    return PromptBatch(ids, torch.ones_like(ids), mm, pixels, grid, [1] * args.prompts, [{}] * args.prompts,
                       image_keys=list(range(args.prompts)))


def params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def active_params(model) -> float:
    """Parameters one text token runs through (MoE: the top-k experts of each layer), excluding the vision tower."""
    text = model.config.text_config
    total = params(model) - params(model.model.visual)
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    if experts:
        total -= experts * (1 - text.num_experts_per_tok / text.num_experts)
    return total


def flops_per_token(model, context: int, train: bool) -> float:
    text = model.config.text_config
    attention = 4 * text.num_hidden_layers * text.num_attention_heads * text.head_dim * context
    return (6 if train else 2) * active_params(model) + (3 if train else 1) * attention


def bench(name: str, args) -> dict:
    from sapo_vl.config import AlgoConfig, RolloutConfig, TrainConfig
    from sapo_vl.rollout.generate import response_mask_from_ids
    from sapo_vl.rollout.types import Rollout
    from sapo_vl.update import PolicyUpdate

    torch.manual_seed(0)
    model = build(name, args)
    batch = prompts(model, args)
    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    inputs = {k: v.to(args.device) for k, v in batch.model_inputs().items()}
    gen = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=True, temperature=1.0,
               num_return_sequences=args.group, use_cache=True, pad_token_id=0)
    model.eval()
    with torch.no_grad():
        model.generate(**inputs, **dict(gen, max_new_tokens=4, min_new_tokens=4))  # warm-up: kernels, allocator
        sync()
        start = time.perf_counter()
        out = model.generate(**inputs, **gen)
        sync()
        rollout_s = time.perf_counter() - start
    completions = out[:, inputs["input_ids"].shape[1]:].cpu()
    copies = batch.repeat(args.group)
    mask, truncated = response_mask_from_ids(completions, -1)  # no EOS id: every token trains
    rollout = Rollout(copies.input_ids, copies.attention_mask, copies.mm_token_type_ids, completions, mask, truncated,
                      torch.arange(args.prompts).repeat_interleave(args.group), copies.pixel_values,
                      copies.image_grid_thw, copies.images_per_sample, copies.records, [""] * len(copies),
                      image_keys=copies.image_keys, advantages=torch.randn(len(copies)))
    model.train()
    update = PolicyUpdate(model, AlgoConfig(), TrainConfig(lr=1e-7, micro_batch_tokens=args.micro_batch_tokens),
                          RolloutConfig())
    update.step(rollout.select(list(range(args.group))))  # warm-up
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync()
    start = time.perf_counter()
    metrics = update.step(rollout)
    sync()
    train_s = time.perf_counter() - start
    context = inputs["input_ids"].shape[1] + args.new_tokens
    gen_tokens = args.prompts * args.group * args.new_tokens
    train_tokens = args.prompts * args.group * context
    patches = batch.pixel_values.shape[0]
    vision = params(model.model.visual)
    rollout_flops = gen_tokens * flops_per_token(model, context // 2, False) + 2 * vision * patches
    train_flops = train_tokens * flops_per_token(model, context // 2, True) + 6 * vision * patches * args.group
    return {"model": name, "active_params_b": active_params(model) / 1e9, "total_params_b": params(model) / 1e9,
            "rollout_tokens_per_s": gen_tokens / rollout_s, "train_tokens_per_s": train_tokens / train_s,
            "rollout_mfu": rollout_flops / rollout_s / PEAK_BF16, "train_mfu": train_flops / train_s / PEAK_BF16,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else math.nan,
            "micro_batches": metrics["micro_batches"], "attention": fastest_attention(args.device)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--moe-layers", type=int, default=8)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--prompt-tokens", type=int, default=256)
    p.add_argument("--image-px", type=int, default=448)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--micro-batch-tokens", type=int, default=16384)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="the tiny models instead of the published shapes")
    args = p.parse_args(argv)
    if args.tiny:
        args.image_px, args.prompt_tokens = min(args.image_px, 64), min(args.prompt_tokens, 32)
    print(f"device {torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}, torch {torch.__version__}, "
          f"{args.prompts} prompts x G {args.group}, {args.prompt_tokens} text + 1 image of {args.image_px} px, "
          f"{args.new_tokens} new tokens")
    for name in args.models:
        r = bench(name, args)
        print(f"{r['model']:<8} {r['total_params_b']:.2f}B params ({r['active_params_b']:.2f}B active, "
              f"{r['attention']}): rollout {r['rollout_tokens_per_s']:,.0f} tok/s (MFU {r['rollout_mfu']:.1%}), "
              f"training {r['train_tokens_per_s']:,.0f} tok/s (MFU {r['train_mfu']:.1%}, "
              f"{r['micro_batches']:.0f} micro-batches), peak {r['peak_memory_gib']:.1f} GiB", flush=True)


if __name__ == "__main__":
    main()
