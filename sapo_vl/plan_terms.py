"""What a run holds in memory per GPU (or CPU process), term by term and phase by phase: ``sapo-vl plan``'s
arithmetic (``sapo_vl.commands.plan``), from the model's config and the recipe.

Capacity: a named GPU's memory as ``torch.cuda.get_device_properties().total_memory`` reports it (``GPUS``), not
the marketing GB; ``--gpu-memory`` overrides. Off it come ``RESERVE`` (CUDA context, NCCL buffers, cuBLAS and
attention workspaces: 1.5 GiB per GPU) and ``FRAGMENTATION`` (10%) of the dynamic terms (``DYNAMIC``: allocated and
freed within a phase, which the caching allocator cannot always pack). A CPU process (``--cpu``) gets the host's
RAM over the processes, no reserve and no allowance (glibc mmaps large tensors and unmaps them on free). The margin
is (capacity - peak) / capacity; a run fits when it is >= 0.

Precision (``precision``): ``model.dtype`` float32 / auto keeps weights, gradients and both AdamW moments in fp32;
bfloat16 / float16 keeps all of them in 2 bytes (pure bf16). Compute (gathered copies, activations, KV cache) is
bf16 when the weights are, or when ``train.mixed_precision`` is bf16 (auto: on a GPU), else fp32. FSDP2 reduces
gradients in fp32. A frozen vision tower (``model.freeze_vision``) keeps its weights in the model dtype, without
gradients or optimizer state. Checkpoint files are in the config's dtype (bf16 for the published models).

Terms per GPU, FSDP2 over N ranks, w / c = weight / compute bytes (DDP and one process: nothing sharded):

- weights, gradients, optimizer: total x w / N, trainable x w / N, 2 x trainable x w / N. AdamW is fused
  (``update.fused_adamw``): its step allocates nothing of the parameters' size.
- gathered units: (root + 2 x largest unit) x c. The root (the trainer's ``PolicyModule``) holds every parameter
  outside a wrap unit (input embedding, final norm, LM head, the vision tower's patch embedding, position table and
  mergers) and stays gathered from its forward's start to its end; beside it two decoder layers (the one computing
  and the prefetched one).
- reduce-scatter buffers: a unit's unsharded gradient in the compute dtype and its fp32 copy, plus the fp32
  shard: largest_unit x (c + 4) + largest_unit x 4 / N.
- activations of one micro-batch of ``train.micro_batch_tokens`` (``activation_bytes``), gradient checkpointing
  as the recipe says, and the chunked LM head's two fp32 (chunk, vocab) buffers and its fp32 gradient.
- MoE aux transient (``algo.moe_aux_coef > 0``, MoE only; ``models.moe.load_balancing_loss``): the router logits
  of every layer concatenated in fp32, their softmax and a third array of that size (probabilities x mask; in the
  backward the probabilities' and logits' gradients), plus the int64 top-k indices: layers x tokens x (3 x
  experts x 4 + k x 8). Measured on CPU (48 layers, 8192 tokens, 128 experts, top-8): a peak of 3.20 x (layers x
  tokens x experts x 4) above its inputs, where the formula gives 3.125.
- rollout KV cache: ``rollout.generation_batch_size`` sequences x (max_prompt_length + max_new_tokens) tokens in
  the compute dtype (DDP / one process: the weights' dtype, generation runs outside autocast); decoding logits:
  one step of those sequences, vocab x 4 bytes each.
- kept layers: through a generation call the trainer keeps as many decoder layers gathered as fit in the memory
  free at its start beside the call's own KV cache and logits, less ``GENERATION_SLACK`` (10%) of the GPU
  (``parallel.kept_units``): here capacity minus every other rollout term minus that slack, at layer x c each, the
  same count on every rank; all of them on a CPU. Each layer not kept is all-gathered at every decoding
  step, layer x c x (N - 1) / N bytes received per rank, for max_new_tokens x ceil(prompts_per_step x group_size /
  generation_batch_size) decoding steps per rollout step, timed at ``--bandwidth`` (150 GB/s: NVLink) (``Regime``).
- load transient: one full tensor of the largest parameter in the file dtype (the model is built on the meta
  device, sharded, and each rank reads its rows of every tensor from the safetensors files).
- KL reference model (``algo.kl_beta > 0``): the model's weights in the model dtype, sharded like the policy under
  FSDP2 (total x w / N), whole on every GPU under DDP.
- DDP: gradient buckets (a second copy of the gradients) with more than one process; a bf16 copy of fp32 weights
  under autocast.

Phases (``plan_phases``), the peak being the largest: load = weights + load transient; rollout = weights +
optimizer (gradients freed) + gathered units + kept layers + KV cache + decoding logits; update = weights +
gradients + optimizer + gathered units + reduce-scatter buffers + activations + aux transient; checkpoint
(torch.distributed.checkpoint, each rank writes its shards, gradients freed) = weights + optimizer, each tensor
staged through host memory in turn; resume = weights + optimizer + gradients (torch creates AdamW's state before
loading it by one step on zero gradients of every parameter, ``get_optimizer_state_dict``) + the load transient.
DeepSpeed (ZeRO-3) is not planned: ``sapo-vl train`` refuses it. ``sapo-vl train`` runs the same plan at start on
GPUs and warns before an obvious OOM (``preflight``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import psutil
import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from sapo_vl.errors import UserError
from sapo_vl.parallel import GENERATION_SLACK, strategy

GiB = 1024 ** 3
GB = 1e9
# total_memory as torch reports it, GiB: 80 GB H100 / A100 85,045,870,592 bytes = 79.2 GiB (public OOM messages
# show 79.1-79.3 by SKU and driver); H200 SXM (141 GB) 139.8 GiB (nvidia-smi lists 143,771 MiB, of which the driver
# keeps some); A100 40GB 39.4 GiB. Public figures, not measured on this project's machines: --gpu-memory overrides.
GPUS = {"h100": 79.2, "h200": 139.8, "a100-80": 79.2, "a100-40": 39.4}
RESERVE = 1.5 * GiB  # per GPU: CUDA context (~0.5 GiB), NCCL communicators' buffers, cuBLAS / attention workspaces
FRAGMENTATION = 0.10  # of the dynamic terms: the caching allocator's blocks that cannot be reused for a new size
BANDWIDTH = 150.0  # GB/s per GPU received by an NVLink all-gather
REDUCE_BYTES = 4  # FSDP2 reduces gradients in fp32
AUX_COPIES = 3  # fp32 (layers x tokens, experts) arrays alive at once in load_balancing_loss (measured 3.20)
STRATEGIES = {"single": "one process", "ddp": "DDP", "fsdp2": "FSDP2"}
PHASES = ("load", "rollout", "update", "checkpoint", "resume")
DYNAMIC = ("load transient", "activations", "reduce-scatter buffers", "MoE aux transient", "rollout KV cache",
           "decoding logits")
TEXT_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
             "intermediate_size", "vocab_size", "num_experts", "num_experts_per_tok", "moe_intermediate_size")
_BYTES = {"float32": 4, "fp32": 4, "auto": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}


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
    layer: int = 0  # the largest decoder layer (a wrap unit outside the vision tower)
    layers: int = 0  # decoder layers
    largest_param: int = 0  # elements of the largest single parameter


def model_sizes(config: dict, freeze_vision: bool) -> ModelSizes:
    """Build ``config`` (a config.json's dict) on the meta device and count its parameters (cached per config)."""
    return _model_sizes(json.dumps(config, sort_keys=True), freeze_vision)


@lru_cache(maxsize=8)
def _model_sizes(config_json: str, freeze_vision: bool) -> ModelSizes:
    try:
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(AutoConfig.for_model(**json.loads(config_json)))
    except (KeyError, ValueError, TypeError) as err:  # no model_type, or one transformers cannot build
        raise UserError(f"transformers cannot build an image-text model from this config: {err}") from None
    text_config = model.config.get_text_config()
    text = {k: getattr(text_config, k, None) for k in TEXT_KEYS}  # attributes: num_experts is an alias in 5.x
    units = [m for m in model.modules() if type(m).__name__ in set(model._no_split_modules or ())]
    largest = max(units, key=_numel, default=None)
    visual = getattr(model.model, "visual", None)
    in_vision = {id(m) for m in visual.modules()} if visual is not None else set()
    decoder = [u for u in units if id(u) not in in_vision]
    vision = _numel(visual)
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    k, e = text.get("num_experts_per_tok") or 0, text.get("num_experts") or 0
    total = _numel(model)
    vision_config = getattr(model.config, "vision_config", None)
    return ModelSizes(total=total, trainable=total - (vision if freeze_vision else 0),
                      active=total - (experts - experts * k // e if e else 0), vision=vision,
                      root=total - sum(map(_numel, units)), largest_unit=_numel(largest),
                      unit=type(largest).__name__ if largest is not None else "-", text=text,
                      vision_config=vision_config.to_dict() if vision_config is not None else {},
                      layer=max(map(_numel, decoder), default=0), layers=len(decoder),
                      largest_param=max((p.numel() for p in model.parameters()), default=0))


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


# ------------------------------------------------------------------------------------------ device and dtypes


@dataclass(frozen=True)
class Device:
    """Where a process runs: ``capacity`` bytes per process (a GPU's memory, or host RAM / processes),
    ``reserve`` bytes off it before any tensor, ``bandwidth`` bytes/s an all-gather receives per rank, and the
    ``fragmentation`` allowance as a share of the dynamic terms."""

    kind: str  # "cuda" | "cpu"
    capacity: float
    reserve: float = RESERVE
    bandwidth: float = BANDWIDTH * GB
    fragmentation: float = FRAGMENTATION
    name: str = "h100"

    @property
    def per(self) -> str:
        return "GPU" if self.kind == "cuda" else "process"  # one of the processes sharing the host


def gpu_device(gpu: str = "h100", memory_gib: float | None = None, bandwidth_gbs: float = BANDWIDTH) -> Device:
    """A named GPU (``GPUS``), or ``memory_gib`` of memory as torch reports it."""
    if memory_gib is None and gpu not in GPUS:
        raise UserError(f"--gpu {gpu!r}: expected one of {sorted(GPUS)} (or --gpu-memory GiB)")
    capacity = (memory_gib if memory_gib is not None else GPUS[gpu]) * GiB
    return Device("cuda", capacity, bandwidth=bandwidth_gbs * GB, name=gpu if memory_gib is None else "custom")


def cpu_device(processes: int = 1, memory_gib: float | None = None) -> Device:
    """Host memory shared by ``processes`` processes: ``memory_gib`` (default: this machine's RAM) over them."""
    if memory_gib is None:
        try:
            ram = float(psutil.virtual_memory().total)
        except ImportError:
            ram = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    else:
        ram = memory_gib * GiB
    return Device("cpu", ram / max(processes, 1), reserve=0.0, fragmentation=0.0, name="cpu")


@dataclass(frozen=True)
class Precision:
    """Bytes per element: ``weights`` (model.dtype: weights, gradients, each AdamW moment), ``compute`` (gathered
    copies, activations, KV cache), ``file`` (the checkpoint's tensors)."""

    weights: int
    compute: int
    file: int = 2


def precision(cfg, kind: str = "cuda", config: dict | None = None) -> Precision:
    """Bytes per element of the state and the compute (module docstring, "Precision")."""
    if cfg.model.dtype not in _BYTES:
        raise UserError(f"model.dtype {cfg.model.dtype!r}: expected one of {sorted(_BYTES)}")
    weights, mp = _BYTES[cfg.model.dtype], cfg.train.mixed_precision
    bf16 = weights == 2 or mp == "bf16" or (mp == "auto" and kind == "cuda")
    return Precision(weights, 2 if bf16 else 4, _file_bytes(config or {}))


def _file_bytes(config: dict) -> int:
    text = config.get("text_config") or {}
    name = next((c.get(k) for c in (config, text) for k in ("dtype", "torch_dtype") if c.get(k)), "bfloat16")
    return 4 if str(name).removeprefix("torch.") in ("float32", "fp32") else 2


# ------------------------------------------------------------------------------------------ terms


def activation_bytes(cfg, sizes: ModelSizes, checkpointing: bool, compute: int | None = None) -> float:
    """One micro-batch's activations (module docstring), ``compute`` bytes per element (default: the GPU's). With
    checkpointing each layer keeps its input (layers x hidden) and one layer is recomputed at a time."""
    b = compute if compute is not None else precision(cfg).compute
    t, text = cfg.train.micro_batch_tokens, sizes.text
    h, layers, vocab = text["hidden_size"], text["num_hidden_layers"], text["vocab_size"]
    per_layer = layer_activations(text)
    kept = layers * h + per_layer if checkpointing else layers * per_layer + h
    head = 2 * cfg.train.logprob_chunk_size * vocab * 4 + vocab * h * 4
    vision = 0 if cfg.model.freeze_vision else _vision_activations(cfg, sizes.vision_config, checkpointing, b)
    return t * kept * b + head + vision


def _vision_activations(cfg, v: dict, checkpointing: bool, b: int) -> float:
    """Upper bound for a trainable vision tower: every token of the micro-batch an image token (4 patches each
    before the 2x2 merge); per patch and block: norms, qkv, attention output and the MLP."""
    if not v:
        return 0.0
    patches, hv = 4 * cfg.train.micro_batch_tokens, v["hidden_size"]
    per_block = 8 * hv + 2 * v["intermediate_size"]
    kept = v["depth"] * hv + per_block if checkpointing else v["depth"] * per_block
    return patches * kept * b


def aux_bytes(cfg, text: dict) -> float:
    """The MoE load-balancing loss's transient: layers x tokens x (AUX_COPIES x experts x 4 + top_k x 8)."""
    if not (cfg.algo.moe_aux_coef > 0 and text.get("num_experts")):
        return 0.0
    rows = text["num_hidden_layers"] * cfg.train.micro_batch_tokens
    return rows * (AUX_COPIES * text["num_experts"] * 4 + text["num_experts_per_tok"] * 8)


def reduce_scatter_bytes(sizes: ModelSizes, prec: Precision, n: int) -> float:
    """FSDP2 reducing one unit's gradients: unsharded in the compute dtype and in fp32, plus the fp32 shard."""
    return sizes.largest_unit * (prec.compute + REDUCE_BYTES) + sizes.largest_unit * REDUCE_BYTES / n


def state_terms(sizes: ModelSizes, prec: Precision, shards: int) -> dict[str, float]:
    """Weights of every parameter, gradients and two AdamW moments of the trainable ones, over ``shards``."""
    w = prec.weights
    return {"weights": sizes.total * w / shards, "gradients": sizes.trainable * w / shards,
            "optimizer (AdamW)": 2 * sizes.trainable * w / shards}


def rollout_sequences(cfg) -> tuple[int, int, int]:
    """(sequences per step, sequences generated at once, tokens per sequence)."""
    r = cfg.rollout
    step = r.prompts_per_step * r.group_size
    return step, min(step, r.generation_batch_size), cfg.data.max_prompt_length + r.max_new_tokens


@dataclass(frozen=True)
class Regime:
    """How generation meets sharded layers: ``kept`` of ``layers`` decoder layers stay gathered; each other one
    is all-gathered at every decoding step, ``bytes_per_token`` received per rank per new token."""

    layers: int
    kept: int
    sharded: bool
    bytes_per_token: float = 0.0
    decoding_steps: int = 0
    bandwidth: float = BANDWIDTH * GB

    @property
    def seconds(self) -> float:
        """All-gather time per rollout step: bytes per token x decoding steps / bandwidth."""
        return self.bytes_per_token * self.decoding_steps / self.bandwidth

    def describe(self) -> str:
        if not self.sharded:
            return "rollout regime: unsharded, every decoder layer is local"
        if self.kept == self.layers:
            return f"rollout regime: every layer kept gathered ({self.layers} decoder layers); no all-gathers per token"
        kept, rest = "none" if self.kept == 0 else str(self.kept), self.layers - self.kept
        gb = self.bytes_per_token / GB
        per_token = f"{gb:.1f}" if gb < 10 else f"{gb:,.0f}"
        return (f"rollout regime: {kept} of {self.layers} decoder layers kept gathered; {rest} layer"
                f"{'s' if rest > 1 else ''} all-gathered per new token = {per_token} GB per token, "
                f"~{self.seconds:,.0f} s of all-gathers per step ({self.decoding_steps:,} decoding steps) at "
                f"{self.bandwidth / GB:g} GB/s")


def regime(cfg, sizes: ModelSizes, prec: Precision, n: int, device: Device, others: float | None) -> Regime:
    """The kept layers (module docstring); ``others``: every other rollout term, None when nothing is sharded."""
    if others is None:
        return Regime(sizes.layers, sizes.layers, sharded=False)
    layer = sizes.layer * prec.compute
    kept = sizes.layers
    if device.kind == "cuda" and layer:
        free = device.capacity * (1 - GENERATION_SLACK) - others
        kept = min(sizes.layers, max(0, math.floor(free / layer)))
    step, _, _ = rollout_sequences(cfg)
    steps = cfg.rollout.max_new_tokens * math.ceil(step / cfg.rollout.generation_batch_size)
    return Regime(sizes.layers, kept, True, (sizes.layers - kept) * layer * (n - 1) / n, steps, device.bandwidth)


# ------------------------------------------------------------------------------------------ phases


@dataclass
class PhasePlan:
    """Bytes per GPU (or CPU process) by phase and term, the generation regime, and the host memory a checkpoint
    stages per rank."""

    phases: dict[str, dict[str, float]]
    regime: Regime
    strategy: str
    processes: int
    device: Device
    host_staging: float = 0.0

    def total(self, phase: str) -> float:
        return sum(self.phases[phase].values())

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.total)

    @property
    def peak(self) -> float:
        return self.total(self.peak_phase)

    @property
    def margin(self) -> float:
        """(capacity - peak) / capacity."""
        return (self.device.capacity - self.peak) / self.device.capacity

    @property
    def fits(self) -> bool:
        return self.peak <= self.device.capacity


def plan_phases(cfg, config: dict, *, strategy: str, processes: int, device: Device,
                sizes: ModelSizes | None = None) -> PhasePlan:
    """Every term of every phase (see the module docstring) for ``processes`` ranks under ``strategy`` ("fsdp2",
    "ddp" or "single"; one process is always "single": nothing sharded, nothing gathered)."""
    if strategy not in STRATEGIES:
        raise UserError(f"strategy {strategy!r}: expected one of {sorted(STRATEGIES)}")
    sizes = sizes or model_sizes(config, cfg.model.freeze_vision)
    prec = precision(cfg, device.kind, config)
    strategy = "single" if processes == 1 else strategy
    sharded, n = strategy == "fsdp2", processes
    state = state_terms(sizes, prec, n if sharded else 1)
    base = {"CUDA context + NCCL": device.reserve} if device.reserve else {}
    base |= {"weights": state["weights"]}
    if cfg.algo.kl_beta > 0:
        base["KL reference model"] = sizes.total * prec.weights / (n if sharded else 1)  # sharded like the policy
    optimizer = {"optimizer (AdamW)": state["optimizer (AdamW)"]}
    gathered = {"gathered units": (sizes.root + 2 * sizes.largest_unit) * prec.compute} if sharded else {}
    _, at_once, tokens = rollout_sequences(cfg)
    kv_dtype = prec.compute if sharded else prec.weights  # DDP / one process: generation outside autocast
    rollout = {**base, **optimizer, **gathered,
               "rollout KV cache": at_once * tokens * kv_bytes_per_token(sizes.text, kv_dtype),
               "decoding logits": at_once * sizes.text["vocab_size"] * 4}
    update = {**base, "gradients": state["gradients"], **optimizer, **gathered,
              **_update_extras(cfg, sizes, prec, strategy, n)}
    phases = {"load": {**base, "load transient": sizes.largest_param * prec.file}, "rollout": rollout,
              "update": update, "checkpoint": {**base, **optimizer},
              "resume": {**base, "gradients": state["gradients"], **optimizer,  # AdamW state init: zero gradients
                         "load transient": sizes.largest_param * prec.weights / (n if sharded else 1)}}
    for terms in phases.values():
        terms["fragmentation"] = device.fragmentation * sum(v for k, v in terms.items() if k in DYNAMIC)
    reg = regime(cfg, sizes, prec, n, device, sum(rollout.values()) if sharded else None)
    if sharded:
        rollout["kept layers (generation)"] = reg.kept * sizes.layer * prec.compute
    return PhasePlan({k: {t: v for t, v in d.items() if v} for k, d in phases.items()}, reg, strategy, n, device,
                     host_staging=sizes.largest_param * prec.weights / (n if sharded else 1))


def _update_extras(cfg, sizes: ModelSizes, prec: Precision, strategy: str, n: int) -> dict[str, float]:
    """The update's terms beyond the state: FSDP2's reduce-scatter buffers, or DDP's gradient buckets and autocast
    copies; the activations of one micro-batch and the MoE aux transient."""
    extras: dict[str, float] = {}
    if strategy == "fsdp2":
        extras["reduce-scatter buffers"] = reduce_scatter_bytes(sizes, prec, n)
    else:
        if strategy == "ddp":
            extras["DDP gradient buckets"] = sizes.trainable * prec.weights
        if prec.compute < prec.weights:
            extras["bf16 autocast copies"] = sizes.total * prec.compute
    extras["activations"] = activation_bytes(cfg, sizes, cfg.model.gradient_checkpointing, prec.compute)
    extras["MoE aux transient"] = aux_bytes(cfg, sizes.text)
    return extras


def verdict(p: PhasePlan) -> tuple[bool, str]:
    """(fits, one line: the peak, its phase, the capacity, the margin and the peak phase's largest term)."""
    name, largest = max(((k, v) for k, v in p.phases[p.peak_phase].items()), key=lambda kv: kv[1])
    return p.fits, (f"{'fits' if p.fits else 'does NOT fit'}: peak {size_text(p.peak)} per {p.device.per} "
                    f"({p.peak_phase}) of {size_text(p.device.capacity)}, margin {p.margin:.1%}; largest term {name} "
                    f"({size_text(largest)})")


def size_text(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if abs(n) >= GiB else f"{n / 1024 ** 2:.1f} MiB"


# ------------------------------------------------------------------------------------------ sapo-vl train's check


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read the model config {path}: {err}") from None


def check_context(cfg, config: dict, where: str) -> None:
    """The longest prompt plus the generation budget must fit the model's context (max_position_embeddings)."""
    context = config.get("text_config", config).get("max_position_embeddings")
    need = cfg.data.max_prompt_length + cfg.rollout.max_new_tokens
    if context and need > context:
        raise UserError(f"data.max_prompt_length ({cfg.data.max_prompt_length}) + rollout.max_new_tokens "
                        f"({cfg.rollout.max_new_tokens}) = {need} exceeds the model's context ({context} tokens, "
                        f"max_position_embeddings in {where})")


def oom_warning(cfg, config: dict, strategy: str, gpus: int, gpu_bytes: float) -> str | None:
    """What ``sapo-vl train`` prints at start on GPUs when the run will not fit (None when it will)."""
    kind = strategy if strategy in STRATEGIES else "ddp"
    p = plan_phases(cfg, config, strategy=kind, processes=gpus, device=gpu_device(memory_gib=gpu_bytes / GiB))
    fits, why = verdict(p)
    return None if fits else f"warning: this run likely runs out of GPU memory ({why}); see `sapo-vl plan`"


def preflight(cfg, path: Path, accelerator) -> None:
    """At the start of ``sapo-vl train``: the prompt and generation budget fit the model's context (a UserError
    otherwise), and on GPUs a warning when the run will likely not fit their memory."""
    where = Path(path) / "config.json"
    config = read_json(where)
    check_context(cfg, config, str(where))
    if torch.cuda.is_available() and accelerator.is_main_process:
        memory = torch.cuda.get_device_properties(accelerator.device).total_memory
        warning = oom_warning(cfg, config, strategy(accelerator), accelerator.num_processes, memory)
        if warning:
            print(f"[sapo-vl] {warning}", flush=True)
