"""``sapo-vl plan RECIPE``: what a run needs on each GPU, from the model's ``config.json`` alone (no weights).

    sapo-vl plan RECIPE.yaml [--gpus N] [--gpu-memory GiB] [--accelerate-config FILE] [--model-config FILE]
                             [--import MODULE ...] [dotted.key=value ...]

The model is built on PyTorch's meta device from its config (no memory, no weights), so parameter counts are
exact for any architecture transformers knows; the rest is arithmetic on the config's numbers. The model config
is ``MODEL_PATH/config.json``, else ``--model-config``, else the published config of the same name bundled in
``recipes/models/`` (``Qwen3-VL-8B-Instruct.json`` for ``model.path: /models/Qwen3-VL-8B-Instruct``).

Per GPU, in bytes (``Terms``):

- weights: every parameter in ``model.dtype`` ("auto" = bf16 on a GPU); gradients and AdamW's two moments for the
  trainable ones (``model.freeze_vision`` leaves the vision tower out). FSDP2 keeps trainable parameters in fp32
  under bf16 compute (accelerate upcasts them). DDP holds all of it on every GPU, plus its gradient buckets (a second
  copy of the gradients) and, with fp32 weights under bf16 autocast, a bf16 copy of the weights. FSDP2 and ZeRO-3
  divide it by the number of GPUs and add the unsharded working copy of the root unit and of two wrap units (the
  one computing and the one prefetched) in the compute dtype.
- activations of one micro-batch of ``train.micro_batch_tokens`` tokens: with gradient checkpointing each decoder
  layer keeps its input and one layer is recomputed at a time; without, every layer keeps what its backward needs
  (``layer_activations``). Plus the chunked LM head's backward (two fp32 (chunk, vocab) buffers and an fp32
  gradient of the head). A trainable vision tower adds an upper bound (every token an image token).
- rollout KV cache: ``prompts_per_step x group_size x (max_prompt_length + max_new_tokens)`` tokens per step, of
  which ``generation_batch_size`` sequences are generated at a time (that is the peak). Under DDP generation runs
  in the weights' dtype (outside autocast), under FSDP2 in the compute dtype.

The peak is the larger of the update (weights, gradients, optimizer, working copies, activations) and the rollout
(weights, optimizer, working copies, KV cache; gradients are freed). A run fits when its peak is within 90% of the
GPU's memory (the rest: CUDA context, allocator fragmentation, kernels' workspaces). ``sapo-vl train`` runs the
same estimate at start on GPUs and warns before an obvious OOM.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from sapo_vl.errors import UserError

GiB = 1024 ** 3
STRATEGIES = {"ddp": "DDP", "fsdp2": "FSDP2", "zero3": "ZeRO-3"}
HEADROOM = 0.9  # share of a GPU's memory a run may plan for
TEXT_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
             "intermediate_size", "vocab_size", "num_experts", "num_experts_per_tok", "moe_intermediate_size")
_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "auto": 2}


# ------------------------------------------------------------------------------------------ the model


@dataclass
class ModelSizes:
    """Parameter counts of a model built from its config on the meta device."""

    total: int
    trainable: int
    active: int  # per token: MoE experts count top-k of num_experts
    vision: int
    root: int  # outside every wrap unit (embeddings, LM head, norms, vision patch embedding and mergers)
    largest_unit: int
    unit: str  # the largest wrap unit's class
    text: dict = field(default_factory=dict)  # text_config: hidden, layers, heads, experts, vocab
    vision_config: dict = field(default_factory=dict)


def model_sizes(config: dict, freeze_vision: bool) -> ModelSizes:
    """Build ``config`` (a config.json's dict) on the meta device and count its parameters."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    import sapo_vl  # noqa: F401  (torchvision compat before transformers)

    try:
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(AutoConfig.for_model(**config))
    except (KeyError, ValueError, TypeError) as err:  # no model_type, or one transformers cannot build
        raise UserError(f"transformers cannot build an image-text model from this config: {err}") from None
    text_config = model.config.get_text_config()
    text = {k: getattr(text_config, k, None) for k in TEXT_KEYS}  # attributes: num_experts is an alias in 5.x
    units = [m for m in model.modules() if type(m).__name__ in set(model._no_split_modules or ())]
    largest = max(units, key=_numel, default=None)
    vision = _numel(getattr(model.model, "visual", None))
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    k, e = text.get("num_experts_per_tok") or 0, text.get("num_experts") or 0
    total = _numel(model)
    vision_config = getattr(model.config, "vision_config", None)
    return ModelSizes(total=total, trainable=total - (vision if freeze_vision else 0),
                      active=total - (experts - experts * k // e if e else 0), vision=vision,
                      root=total - sum(map(_numel, units)), largest_unit=_numel(largest),
                      unit=type(largest).__name__ if largest is not None else "-", text=text,
                      vision_config=vision_config.to_dict() if vision_config is not None else {})


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def layer_activations(text: dict) -> int:
    """Elements one decoder layer keeps per token for its backward: attention (norm input and output, q / k / v
    before and after Qwen3's q/k norms, attention output) and the MLP (norm input and output; gate, up and their
    product for SwiGLU; for MoE the router logits and, per selected expert, its input copy, gate-up, activation,
    product and output)."""
    h = text["hidden_size"]
    hd = text.get("head_dim") or h // text["num_attention_heads"]
    q, kv = text["num_attention_heads"] * hd, text["num_key_value_heads"] * hd
    attention = 2 * h + 3 * q + 3 * kv
    if text.get("num_experts"):
        k, e, im = text["num_experts_per_tok"], text["num_experts"], text["moe_intermediate_size"]
        return attention + 2 * h + e + k * (2 * h + 4 * im)
    return attention + 2 * h + 3 * text["intermediate_size"]


def kv_bytes_per_token(text: dict, dtype_bytes: int) -> int:
    """Keys and values of every layer for one token."""
    hd = text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
    return 2 * text["num_hidden_layers"] * text["num_key_value_heads"] * hd * dtype_bytes


# ------------------------------------------------------------------------------------------ the run


@dataclass
class Terms:
    """Bytes per GPU of one strategy, by phase."""

    update: dict[str, float]
    rollout: dict[str, float]

    @property
    def peak(self) -> tuple[str, float]:
        phases = {"update": sum(self.update.values()), "rollout": sum(self.rollout.values())}
        phase = max(phases, key=phases.get)
        return phase, phases[phase]

    @property
    def largest(self) -> tuple[str, float]:
        terms = self.update if self.peak[0] == "update" else self.rollout
        return max(terms.items(), key=lambda kv: kv[1])


def dtype_bytes(cfg) -> tuple[int, int]:
    """(weights, compute) bytes per element for the recipe's ``model.dtype`` and ``train.mixed_precision``
    ("auto" = bf16 on a GPU)."""
    if cfg.model.dtype not in _BYTES:
        raise UserError(f"model.dtype {cfg.model.dtype!r}: expected one of {sorted(_BYTES)}")
    weights = _BYTES[cfg.model.dtype]
    return weights, (2 if cfg.train.mixed_precision in ("bf16", "auto") else weights)


def activation_bytes(cfg, sizes: ModelSizes, checkpointing: bool) -> float:
    """One micro-batch's activations for ``train.micro_batch_tokens`` tokens (see the module docstring)."""
    t, text, (_, b) = cfg.train.micro_batch_tokens, sizes.text, dtype_bytes(cfg)
    h, layers, vocab = text["hidden_size"], text["num_hidden_layers"], text["vocab_size"]
    per_layer = layer_activations(text)
    kept = layers * h + per_layer if checkpointing else layers * per_layer + h
    head = 2 * cfg.train.logprob_chunk_size * vocab * 4 + vocab * h * 4
    vision = 0 if cfg.model.freeze_vision else _vision_activations(cfg, sizes.vision_config, checkpointing)
    return t * kept * b + head + vision


def _vision_activations(cfg, v: dict, checkpointing: bool) -> float:
    """Upper bound for a trainable vision tower: every token of the micro-batch an image token (4 patches each
    before the 2x2 merge); per patch and block: norms, qkv, attention output and the MLP."""
    if not v:
        return 0.0
    patches, hv = 4 * cfg.train.micro_batch_tokens, v["hidden_size"]
    per_block = 8 * hv + 2 * v["intermediate_size"]
    kept = v["depth"] * hv + per_block if checkpointing else v["depth"] * per_block
    return patches * kept * dtype_bytes(cfg)[1]


def state_terms(cfg, sizes: ModelSizes, strategy: str, gpus: int) -> dict[str, float]:
    """Weights, gradients, AdamW state and working copies per GPU (see the module docstring)."""
    bw, bc = dtype_bytes(cfg)
    sharded = strategy != "ddp"
    mixed = cfg.train.mixed_precision in ("bf16", "auto")
    bt = 4 if strategy == "fsdp2" and mixed else bw  # accelerate's FSDP2 upcasts trainable parameters under bf16
    n = gpus if sharded else 1
    terms = {"weights": (sizes.trainable * bt + (sizes.total - sizes.trainable) * bw) / n,
             "gradients": sizes.trainable * bt / n * (2 if not sharded and gpus > 1 else 1),
             "optimizer (AdamW)": 2 * sizes.trainable * bt / n}
    if sharded:
        terms["gathered units"] = (sizes.root + 2 * sizes.largest_unit) * bc
    elif bc < bw:
        terms["bf16 autocast copies"] = sizes.total * bc
    if cfg.algo.kl_beta > 0:
        terms["KL reference model"] = sizes.total * bw  # whole on every GPU
    return terms


def rollout_sequences(cfg) -> tuple[int, int, int]:
    """(sequences per step, sequences generated at once, tokens per sequence)."""
    r = cfg.rollout
    step = r.prompts_per_step * r.group_size
    return step, min(step, r.generation_batch_size), cfg.data.max_prompt_length + r.max_new_tokens


def terms(cfg, sizes: ModelSizes, strategy: str, gpus: int) -> Terms:
    state = state_terms(cfg, sizes, strategy, gpus)
    bw, bc = dtype_bytes(cfg)
    _, at_once, tokens = rollout_sequences(cfg)
    kv = at_once * tokens * kv_bytes_per_token(sizes.text, bc if strategy != "ddp" else bw)
    update = {**state, "activations": activation_bytes(cfg, sizes, cfg.model.gradient_checkpointing)}
    rollout = {k: v for k, v in state.items() if k != "gradients"}
    rollout["rollout KV cache"] = kv
    return Terms(update, rollout)


def verdict(t: Terms, gpu_bytes: float) -> tuple[bool, str]:
    """(fits, one line naming the peak phase and its largest term)."""
    phase, peak = t.peak
    name, largest = t.largest
    fits = peak <= HEADROOM * gpu_bytes
    return fits, (f"{'fits' if fits else 'does NOT fit'}: peak {_size(peak)} per GPU ({phase}) of "
                  f"{_size(HEADROOM * gpu_bytes)} usable; largest term {name} ({_size(largest)})")


def _size(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / 1024 ** 2:.1f} MiB"


# ------------------------------------------------------------------------------------------ inputs


def model_config(cfg, recipe: str | Path | None, explicit: str | None = None) -> tuple[dict, str]:
    """(config.json as a dict, where it came from): ``explicit``, MODEL_PATH/config.json, the tiny model's, or the
    published config bundled under the recipes' ``models/`` folder."""
    if explicit:
        return _read_json(Path(explicit)), explicit
    if cfg.model.path == "tiny":
        from sapo_vl.models.tiny import TinyConfig, build_model_config, build_tokenizer

        tiny = TinyConfig(**cfg.model.tiny)
        return build_model_config(tiny, build_tokenizer(tiny.vocab_size, tiny.seed)).to_dict(), "the tiny model"
    local = Path(cfg.model.path) / "config.json"
    bundled = (Path(recipe).resolve().parents[1] / "models" / f"{Path(cfg.model.path).name}.json") if recipe else None
    for path in (local, bundled):
        if path is not None and path.is_file():
            return _read_json(path), str(path)
    raise UserError(f"no model config: {local} does not exist (weights not downloaded yet?) and no published config "
                    f"named {Path(cfg.model.path).name}.json is bundled; pass --model-config CONFIG.json")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read the model config {path}: {err}") from None


def launch(accelerate_config: str | None, cfg) -> tuple[str, int | None]:
    """(strategy, processes) from an accelerate config file, else from the recipe's ``train.sharding``."""
    if accelerate_config is None:
        return ("fsdp2" if cfg.train.sharding == "fsdp2" else "ddp"), None
    import yaml

    data = yaml.safe_load(Path(accelerate_config).read_text()) or {}
    kind = data.get("distributed_type", "NO")
    strategy = {"FSDP": "fsdp2", "DEEPSPEED": "zero3"}.get(kind, "ddp")
    if kind == "FSDP" and int((data.get("fsdp_config") or {}).get("fsdp_version", 1)) != 2:
        raise UserError(f"{accelerate_config}: FSDP version 1 is not supported; set fsdp_config.fsdp_version: 2")
    return strategy, int(data.get("num_processes", 1))


def check_context(cfg, config: dict, where: str) -> None:
    """The longest prompt plus the generation budget must fit the model's context (max_position_embeddings)."""
    context = config.get("text_config", config).get("max_position_embeddings")
    need = cfg.data.max_prompt_length + cfg.rollout.max_new_tokens
    if context and need > context:
        raise UserError(f"data.max_prompt_length ({cfg.data.max_prompt_length}) + rollout.max_new_tokens "
                        f"({cfg.rollout.max_new_tokens}) = {need} exceeds the model's context ({context} tokens, "
                        f"max_position_embeddings in {where})")


# ------------------------------------------------------------------------------------------ output


def _count(n: int) -> str:
    return next(f"{n / d:.3g} {u}" for d, u in ((1e9, "B"), (1e6, "M"), (1e3, "K"), (1, "")) if n >= d or d == 1)


ROWS = ("weights", "gradients", "optimizer (AdamW)", "gathered units", "bf16 autocast copies", "KL reference model",
        "activations", "rollout KV cache")


def render(cfg, sizes: ModelSizes, strategy: str, gpus: int, gpu_bytes: float) -> list[str]:
    """The plan as lines of text: sizes, dtypes, a table of terms per strategy, the budgets, the verdict."""
    bw, bc = dtype_bytes(cfg)
    every = {s: terms(cfg, sizes, s, gpus) for s in STRATEGIES}
    unit, scale = ("GiB", GiB) if every["ddp"].peak[1] >= GiB else ("MiB", 1024 ** 2)
    lines = [f"parameters: {_count(sizes.total)} total, {_count(sizes.trainable)} trainable"
             + (" (vision tower frozen)" if cfg.model.freeze_vision else "")
             + (f", {_count(sizes.active)} active per token (MoE)" if sizes.active < sizes.total else "")
             + f"; largest wrap unit {sizes.unit} {_count(sizes.largest_unit)}, root {_count(sizes.root)}",
             f"dtypes: weights {bw * 8}-bit (model.dtype={cfg.model.dtype}), compute {bc * 8}-bit "
             f"(train.mixed_precision={cfg.train.mixed_precision})",
             f"per GPU ({unit}), {gpus} GPU(s)".ljust(30) + "".join(f"{STRATEGIES[s]:>9}" for s in STRATEGIES)]
    for name in ROWS:
        row = [every[s].update.get(name, every[s].rollout.get(name)) for s in STRATEGIES]
        if any(v is not None for v in row):
            lines.append(f"  {name}".ljust(30) + "".join(f"{(v or 0.0) / scale:>9.1f}" for v in row))
    for phase in ("update", "rollout"):
        row = [sum(getattr(every[s], phase).values()) for s in STRATEGIES]
        lines.append(f"  = {phase} phase".ljust(30) + "".join(f"{v / scale:>9.1f}" for v in row))
    lines += _budget_lines(cfg, sizes, bw if strategy == "ddp" else bc)
    why = verdict(every[strategy], gpu_bytes)[1]
    note = " (DeepSpeed is not supported by sapo-vl train)" if strategy == "zero3" else ""
    return lines + [f"verdict under {STRATEGIES[strategy]}{note}: {why}"]


def _budget_lines(cfg, sizes: ModelSizes, kv_dtype: int) -> list[str]:
    t = cfg.train.micro_batch_tokens
    on, off = activation_bytes(cfg, sizes, True), activation_bytes(cfg, sizes, False)
    step, at_once, tokens = rollout_sequences(cfg)
    per_token = kv_bytes_per_token(sizes.text, kv_dtype)
    mark = "on" if cfg.model.gradient_checkpointing else "off"
    return [f"activations, {t:,} tokens per micro-batch: {_size(on)} with gradient checkpointing, {_size(off)} "
            f"without (recipe: {mark})",
            f"rollout KV cache: {step} sequences x {tokens:,} tokens = {_size(step * tokens * per_token)} per step; "
            f"{at_once} at a time (rollout.generation_batch_size) = {_size(at_once * tokens * per_token)}"]


def plan(cfg, config: dict, strategy: str, gpus: int, gpu_bytes: float) -> tuple[bool, list[str]]:
    """(fits, the plan's lines) for ``gpus`` GPUs of ``gpu_bytes`` under ``strategy``."""
    sizes = model_sizes(config, cfg.model.freeze_vision)
    return verdict(terms(cfg, sizes, strategy, gpus), gpu_bytes)[0], render(cfg, sizes, strategy, gpus, gpu_bytes)


def oom_warning(cfg, config: dict, strategy: str, gpus: int, gpu_bytes: float) -> str | None:
    """What ``sapo-vl train`` prints at start on GPUs when the run will not fit (None when it will)."""
    sizes = model_sizes(config, cfg.model.freeze_vision)
    fits, why = verdict(terms(cfg, sizes, "ddp" if strategy == "single" else strategy, gpus), gpu_bytes)
    return None if fits else f"warning: this run likely runs out of GPU memory ({why}); see `sapo-vl plan`"


def preflight(cfg, path: Path, accelerator) -> None:
    """At the start of ``sapo-vl train``: the prompt and generation budget fit the model's context (a UserError
    otherwise), and on GPUs a warning when the run will likely not fit their memory."""
    import torch

    from sapo_vl.parallel import strategy

    where = Path(path) / "config.json"
    config = _read_json(where)
    check_context(cfg, config, str(where))
    if torch.cuda.is_available() and accelerator.is_main_process:
        memory = torch.cuda.get_device_properties(accelerator.device).total_memory
        warning = oom_warning(cfg, config, strategy(accelerator), accelerator.num_processes, memory)
        if warning:
            print(f"[sapo-vl] {warning}", flush=True)


def cli_main(argv: list[str]) -> int:
    from sapo_vl.config import load_config
    from sapo_vl.plugins import split_imports

    argv, imports = split_imports(argv)
    parser = argparse.ArgumentParser(prog="sapo-vl plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value, as for sapo-vl train")
    parser.add_argument("--gpus", type=int, help="GPUs in the run (default: the accelerate config's, else 8)")
    parser.add_argument("--gpu-memory", type=float, default=80.0, help="GiB per GPU (default 80)")
    parser.add_argument("--accelerate-config", help="the launch's accelerate config (its strategy and processes)")
    parser.add_argument("--model-config", help="the model's config.json (default: see above)")
    args = parser.parse_args(argv)
    cfg = load_config(args.recipe, args.overrides, imports)
    config, source = model_config(cfg, args.recipe, args.model_config)
    check_context(cfg, config, source)
    strategy, processes = launch(args.accelerate_config, cfg)
    gpus = args.gpus or processes or 8
    fits, lines = plan(cfg, config, strategy, gpus, args.gpu_memory * GiB)
    print(f"sapo-vl plan {args.recipe}: model config {source}; {STRATEGIES[strategy]} on {gpus} GPU(s) of "
          f"{args.gpu_memory:g} GiB")
    print("\n".join(lines))
    return 0 if fits else 1
