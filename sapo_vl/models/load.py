"""Load a Qwen3-VL(-MoE) policy and its processor from a local path, the Hugging Face way.

The same code loads a real checkpoint (e.g. Qwen3-VL-30B-A3B-Instruct downloaded beforehand) and the offline tiny
model: ``AutoProcessor.from_pretrained`` and ``AutoModelForImageTextToText.from_pretrained``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from sapo_vl.checkpoint import is_checkpoint, load_checkpoint
from sapo_vl.models.shards import UnsupportedConversion, empty_model, load_safetensors, materialize, own_memory
from sapo_vl.sections import ModelConfig
from sapo_vl.models.vision import patch_embed_as_linear

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}
EXPERTS_IMPLEMENTATIONS = ("eager", "batched_mm", "grouped_mm")


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype:
    """"auto" -> bfloat16 on CUDA devices that support it, float32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        cuda = torch.device(device).type == "cuda"
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)} or 'auto'")
    return _DTYPES[dtype]


def resolve_attn_implementation(requested: str | None, device: str | torch.device = "cpu") -> str:
    """"auto" -> flash_attention_2 when flash-attn is installed and the device is CUDA, else sdpa."""
    if requested not in (None, "auto"):
        return requested
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_processor(path: str | Path):
    """The checkpoint's processor, tokenizer padding on the left (generation batches)."""
    processor = AutoProcessor.from_pretrained(str(path))
    if getattr(processor, "tokenizer", None) is not None:
        processor.tokenizer.padding_side = "left"
    return processor


def model_kwargs(cfg: ModelConfig, device: str | torch.device = "cpu") -> dict:
    """What ``from_pretrained`` / ``from_config`` get from the ``model`` section: dtype, attention and MoE kernels."""
    experts = cfg.experts_implementation
    if experts is not None and experts not in EXPERTS_IMPLEMENTATIONS:
        raise ValueError(f"experts_implementation {experts!r} not in {EXPERTS_IMPLEMENTATIONS}")
    kwargs = dict(dtype=resolve_dtype(cfg.dtype, device),
                  attn_implementation=resolve_attn_implementation(cfg.attn_implementation, device))
    if experts is not None:
        kwargs["experts_implementation"] = experts
    return kwargs


def load_policy(path: str | Path, cfg: ModelConfig | None = None, device: str | torch.device = "cpu", *,
                empty: bool = False):
    """Load ``(model, processor)`` from a local checkpoint directory, as the ``model`` config section says (``path``
    there is ignored: the caller resolves it):

    - a Hugging Face model directory (real or tiny): built from its config and filled from its safetensors files
      (``sapo_vl.models.shards``: the tensors ``from_pretrained`` would give, each in memory of its own: on CPU
      ``from_pretrained`` leaves same-dtype weights as views into the memory-mapped files, at addresses that change
      float rounding, so a run and its resume would differ); ``from_pretrained`` for layouts only it converts;
    - a sapo_vl training checkpoint (``sapo_vl.checkpoint``: config.json plus DCP shards): the model built from its
      config and filled from the shards, whole, in this process (e.g. ``sapo-vl eval --model RUN/checkpoints/latest``);
    - ``empty=True``: either kind, with the parameters left on the meta device: a sharded run shards the model first,
      then fills each rank's shards (``sapo_vl.models.shards``), so no process ever holds the whole model.

    Settings: dtype ("auto": bf16 on capable CUDA, else fp32; "bf16", "fp32", ...), attn_implementation ("auto":
    flash_attention_2 when installed on CUDA, else sdpa), experts_implementation (MoE kernels: "eager", "batched_mm",
    "grouped_mm"; None: HF default), gradient_checkpointing (non-reentrant), freeze_vision (requires_grad=False).
    The vision tower's patch embedding runs as one matmul (``patch_embed_as_linear``), its weights unchanged.
    """
    cfg = cfg or ModelConfig()
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no Hugging Face checkpoint at {path} (config.json missing). Build the offline "
                                f"tiny model with `sapo-vl make-tiny-model {path}` or download a real one first.")
    kwargs = model_kwargs(cfg, device)
    model = empty_model(path, kwargs)
    if not empty:
        materialize(model, device)
        try:
            if is_checkpoint(path):
                load_checkpoint(path, model)
            else:
                load_safetensors(model, path)
        except UnsupportedConversion:  # a weight layout only transformers' own loader converts
            model = AutoModelForImageTextToText.from_pretrained(str(path), **kwargs)
            model.to(device)
            own_memory(model)
    configure(model, cfg)
    return model, load_processor(path)


def configure(model, cfg: ModelConfig) -> None:
    """The ``model`` section's training settings on a loaded (or empty) model: the patch embedding as one matmul,
    gradient checkpointing, a frozen vision tower."""
    patch_embed_as_linear(model)
    if cfg.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name warns
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if cfg.freeze_vision:
        freeze_vision_tower(model)


def vision_tower(model) -> torch.nn.Module:
    """The vision encoder of a Qwen3-VL(-MoE) model (``model.model.visual``)."""
    inner = getattr(model, "model", model)
    tower = getattr(inner, "visual", None)
    if tower is None:
        raise AttributeError(f"{type(model).__name__} has no vision tower at .model.visual")
    return tower


def freeze_vision_tower(model) -> int:
    """Freeze the vision tower; returns how many parameters were frozen."""
    frozen = 0
    for p in vision_tower(model).parameters():
        p.requires_grad_(False)
        frozen += p.numel()
    return frozen


def is_moe(model) -> bool:
    text_config = getattr(model.config, "text_config", model.config)
    return bool(getattr(text_config, "num_experts", 0)) and getattr(text_config, "num_experts_per_tok", 0) > 0

