"""``sapo-vl plan RECIPE``: the memory a run needs per GPU (or per CPU process), phase by phase, from the model's
``config.json`` alone (no weights).

    sapo-vl plan RECIPE.yaml [--gpus N] [--gpu h100|h200|a100-80|a100-40] [--gpu-memory GiB] [--bandwidth GB/s]
                             [--cpu --processes N] [--accelerate-config FILE] [--model-config FILE]
                             [--import MODULE ...] [dotted.key=value ...]

The model is built on PyTorch's meta device (no memory), so parameter counts are exact for any architecture
transformers knows; the rest is arithmetic on the config's and the recipe's numbers. The model config is
``MODEL_PATH/config.json``, else ``--model-config``, else the published one bundled in ``recipes/models/``.

The terms, phases and the rollout regime are computed in ``sapo_vl.plan_terms`` (its docstring explains each one
and where it comes from, and ``preflight``, which warns at the start of ``sapo-vl train``); this module reads the
inputs and prints the table and the verdict.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from sapo_vl.config import load_config
from sapo_vl.errors import UserError
from sapo_vl.models.tiny import TinyConfig, build_model_config, build_tokenizer
from sapo_vl.plan_terms import (BANDWIDTH, GPUS, PHASES, STRATEGIES, Device, GiB, ModelSizes, PhasePlan, Precision,
                                activation_bytes, check_context, cpu_device, gpu_device, kv_bytes_per_token,
                                model_sizes, plan_phases, precision, read_json, rollout_sequences, size_text, verdict)
from sapo_vl.plugins import split_imports


# ------------------------------------------------------------------------------------------ inputs


def model_config(cfg, recipe: str | Path | None, explicit: str | None = None) -> tuple[dict, str]:
    """(config.json as a dict, where it came from): ``explicit``, MODEL_PATH/config.json, the tiny model's, or the
    published config bundled under the recipes' ``models/`` folder."""
    if explicit:
        return read_json(Path(explicit)), explicit
    if cfg.model.path == "tiny":
        tiny = TinyConfig(**cfg.model.tiny)
        return build_model_config(tiny, build_tokenizer(tiny.vocab_size, tiny.seed)).to_dict(), "the tiny model"
    local = Path(cfg.model.path) / "config.json"
    bundled = (Path(recipe).resolve().parents[1] / "models" / f"{Path(cfg.model.path).name}.json") if recipe else None
    for path in (local, bundled):
        if path is not None and path.is_file():
            return read_json(path), str(path)
    raise UserError(f"no model config: {local} does not exist (weights not downloaded yet?) and no published config "
                    f"named {Path(cfg.model.path).name}.json is bundled; pass --model-config CONFIG.json")


def launch(accelerate_config: str | None, cfg) -> tuple[str, int | None]:
    """(strategy, processes) from an accelerate config file, else from the recipe's ``train.sharding``."""
    if accelerate_config is None:
        return ("fsdp2" if cfg.train.sharding == "fsdp2" else "ddp"), None

    data = yaml.safe_load(Path(accelerate_config).read_text()) or {}
    kind = data.get("distributed_type", "NO")
    if kind == "DEEPSPEED":
        raise UserError(f"{accelerate_config}: DeepSpeed is refused by sapo-vl train; plan an FSDP2 launch, which "
                        "shards the same state")
    if kind == "FSDP" and int((data.get("fsdp_config") or {}).get("fsdp_version", 1)) != 2:
        raise UserError(f"{accelerate_config}: FSDP version 1 is not supported; set fsdp_config.fsdp_version: 2")
    return ("fsdp2" if kind == "FSDP" else "ddp"), int(data.get("num_processes", 1))


# ------------------------------------------------------------------------------------------ output


def _count(n: int) -> str:
    return next(f"{n / d:.3g} {u}" for d, u in ((1e9, "B"), (1e6, "M"), (1e3, "K"), (1, "")) if n >= d or d == 1)


ROWS = ("CUDA context + NCCL", "weights", "gradients", "optimizer (AdamW)", "DDP gradient buckets",
        "bf16 autocast copies", "gathered units", "kept layers (generation)", "KL reference model", "load transient",
        "activations", "reduce-scatter buffers", "MoE aux transient", "rollout KV cache", "decoding logits",
        "fragmentation")


def render(cfg, sizes: ModelSizes, p: PhasePlan, other: PhasePlan | None = None) -> list[str]:
    """The plan as lines of text: sizes, dtypes, the table of terms by phase, the budgets, the regime, the
    other strategy's peak, and the verdict (last)."""
    prec = precision(cfg, p.device.kind)
    unit, scale = ("GiB", GiB) if p.peak >= GiB else ("MiB", 1024 ** 2)
    share = f" ({p.device.fragmentation:.0%})" if p.device.fragmentation else ""
    lines = [f"parameters: {_count(sizes.total)} total, {_count(sizes.trainable)} trainable"
             + (" (vision tower frozen)" if cfg.model.freeze_vision else "")
             + (f", {_count(sizes.active)} active per token (MoE)" if sizes.active < sizes.total else "")
             + f"; largest wrap unit {sizes.unit} {_count(sizes.largest_unit)}, root {_count(sizes.root)}",
             f"dtypes: weights, gradients and AdamW moments {prec.weights * 8}-bit (model.dtype={cfg.model.dtype}), "
             f"compute {prec.compute * 8}-bit (train.mixed_precision={cfg.train.mixed_precision})",
             f"per {p.device.per} ({unit}), {STRATEGIES[p.strategy]} x {p.processes}".ljust(34)
             + "".join(f"{ph:>11}" for ph in PHASES)]
    for name in ROWS:
        row = [p.phases[ph].get(name) for ph in PHASES]
        if any(v is not None for v in row):
            label = f"  {name}{share if name == 'fragmentation' else ''}"
            lines.append(label.ljust(34) + "".join(
                f"{v / scale:>11.2f}" if v is not None else f"{'-':>11}" for v in row))
    lines.append("  = total".ljust(34) + "".join(f"{p.total(ph) / scale:>11.2f}" for ph in PHASES))
    lines += _budget_lines(cfg, sizes, p, prec)
    if other is not None:
        fits = "fits" if other.fits else "does NOT fit"
        lines.append(f"under {STRATEGIES[other.strategy]} on the same {other.processes} {p.device.per}s: peak "
                     f"{size_text(other.peak)} "
                     f"({other.peak_phase}), margin {other.margin:.1%}: {fits}")
    return lines + [f"verdict under {STRATEGIES[p.strategy]}: {verdict(p)[1]}"]


def _budget_lines(cfg, sizes: ModelSizes, p: PhasePlan, prec: Precision) -> list[str]:
    t = cfg.train.micro_batch_tokens
    on = activation_bytes(cfg, sizes, True, prec.compute)
    off = activation_bytes(cfg, sizes, False, prec.compute)
    step, at_once, tokens = rollout_sequences(cfg)
    per_token = kv_bytes_per_token(sizes.text, prec.compute if p.strategy == "fsdp2" else prec.weights)
    mark = "on" if cfg.model.gradient_checkpointing else "off"
    return [f"activations, {t:,} tokens per micro-batch: {size_text(on)} with gradient checkpointing, {size_text(off)} "
            f"without (recipe: {mark})",
            f"rollout KV cache: {step} sequences x {tokens:,} tokens = {size_text(step * tokens * per_token)} per "
            "step; "
            f"{at_once} at a time (rollout.generation_batch_size) = {size_text(at_once * tokens * per_token)}",
            p.regime.describe(),
            f"checkpoint: each rank writes its own shards (torch.distributed.checkpoint), each tensor staged through "
            f"host memory in turn: at most {size_text(p.host_staging)} per rank (the largest parameter's shard)"]


def plan(cfg, config: dict, strategy: str, gpus: int, device: Device | float) -> tuple[bool, list[str]]:
    """(fits, the plan's lines) for ``gpus`` processes on ``device`` (a ``Device``, or a GPU's bytes)."""
    if not isinstance(device, Device):
        device = gpu_device(memory_gib=device / GiB)
    sizes = model_sizes(config, cfg.model.freeze_vision)
    p = plan_phases(cfg, config, strategy=strategy, processes=gpus, device=device, sizes=sizes)
    other = None
    if p.strategy != "single":
        alt = "ddp" if p.strategy == "fsdp2" else "fsdp2"
        other = plan_phases(cfg, config, strategy=alt, processes=gpus, device=device, sizes=sizes)
    return p.fits, render(cfg, sizes, p, other)


def main(argv: list[str]) -> int:
    argv, imports = split_imports(argv)
    parser = argparse.ArgumentParser(prog="sapo-vl plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value, as for sapo-vl train")
    parser.add_argument("--gpus", type=int, help="GPUs in the run (default: the accelerate config's, else 8)")
    parser.add_argument("--gpu", default="h100", choices=sorted(GPUS), help="the GPU (default h100: 79.2 GiB)")
    parser.add_argument("--gpu-memory", type=float, help="GiB per GPU as torch reports it (overrides --gpu)")
    parser.add_argument("--bandwidth", type=float, default=BANDWIDTH, help="all-gather GB/s per GPU (default 150)")
    parser.add_argument("--cpu", action="store_true", help="plan host memory per process of a CPU run")
    parser.add_argument("--processes", type=int, help="with --cpu: processes (default: the accelerate config's, "
                                                      "else 1)")
    parser.add_argument("--memory", type=float, help="with --cpu: host GiB (default: this machine's RAM)")
    parser.add_argument("--accelerate-config", help="the launch's accelerate config (its strategy and processes)")
    parser.add_argument("--model-config", help="the model's config.json (default: see above)")
    args = parser.parse_intermixed_args(argv)  # overrides before or after the options
    cfg = load_config(args.recipe, args.overrides, imports)
    config, source = model_config(cfg, args.recipe, args.model_config)
    check_context(cfg, config, source)
    strategy, processes = launch(args.accelerate_config, cfg)
    if args.cpu:
        n = args.processes or processes or 1
        device = cpu_device(n, args.memory)
        where = f"{n} CPU process(es) of {size_text(device.capacity)} each"
    else:
        n = args.gpus or processes or 8
        device = gpu_device(args.gpu, args.gpu_memory, args.bandwidth)
        where = f"{n} GPU(s) of {size_text(device.capacity)} ({device.name})"
    fits, lines = plan(cfg, config, strategy, n, device)
    print(f"sapo-vl plan {args.recipe}: model config {source}; {STRATEGIES['single' if n == 1 else strategy]} on "
          f"{where}")
    print("\n".join(lines))
    return 0 if fits else 1
