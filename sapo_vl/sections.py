"""The training config's typed sections (pydantic models), and the helpers every config-like file shares: dotted
``key=value`` overrides (OmegaConf) and one-line validation errors.

Components receive their own section (``PolicyUpdate`` gets ``algo``, ``train`` and ``rollout``; ``warmup`` its
section; the data layer ``data``), never the whole ``Config``. Registered names (datasets, rewards, losses, ...)
and the policy loss's hyperparameters are checked by ``sapo_vl.config.load_config``, which sits above the
registries; the loss hyperparameters' defaults are the loss functions' own keyword defaults.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any, Literal

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sapo_vl.errors import ConfigError, UserError

__all__ = ["AlgoConfig", "Config", "DataConfig", "DataSource", "LogConfig", "ModelConfig", "RewardConfig",
           "RolloutConfig", "RolloutCorrection", "TrainConfig", "WarmupConfig", "parse_override", "validated"]


class Section(BaseModel):
    """A config section: unknown keys, NaN / inf and wrong types are errors; numbers may be given to strings."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, coerce_numbers_to_str=True)


class ModelConfig(Section):
    path: str = "tiny"  # a local HF checkpoint directory, or "tiny" to build the offline tiny model on the fly
    tiny: dict = {}  # TinyConfig overrides when path == "tiny" (e.g. {moe: true, seed: 0})
    # trained weights, gradients and AdamW state: auto / float32 = fp32 master weights (bf16 compute on GPUs through
    # train.mixed_precision) | bfloat16 = pure bf16 (weights, gradients and both AdamW moments bf16, half the memory)
    dtype: Literal["auto", "float32", "fp32", "bfloat16", "bf16"] = "auto"
    attn_implementation: str = "auto"  # auto = flash_attention_2 if installed on CUDA, else sdpa
    experts_implementation: str | None = None  # eager | batched_mm | grouped_mm
    gradient_checkpointing: bool = False
    freeze_vision: bool = False


class DataSource(Section):
    """One entry of ``data.mixture``: a registered dataset sampled with probability proportional to ``weight``."""

    dataset: str
    weight: float = Field(1.0, gt=0)
    kwargs: dict = {}  # options of the dataset's builder
    reward: str | None = None  # score this source's records with this reward (routed by reward.funcs' auto)
    name: str | None = None  # its name in metrics (reward/by_source/<name>); default: the dataset name
    split: str | None = None  # default: data.split
    eval_split: str | None = None  # default: data.eval_split
    eval_kwargs: dict = {}  # extra builder options for the held-out split


class DataConfig(Section):
    dataset: str | None = "synthetic_shapes"  # a name in sapo_vl.data.DATASETS (jsonl / json / parquet / disk: path=)
    kwargs: dict = {}
    split: str = "train"
    eval_dataset: str | None = None  # default: same dataset (with kwargs + eval_kwargs; another gets eval_kwargs)
    eval_kwargs: dict = {}
    eval_split: str = "test"
    mixture: list[DataSource] = []  # several datasets by weight (replaces dataset; on the command line too)
    system_prompt: str | None = None
    max_prompt_length: int = Field(2048, ge=1)
    min_pixels: int | None = None
    max_pixels: int | None = None
    on_error: Literal["raise", "skip"] = "raise"

    @model_validator(mode="after")
    def _consistent(self):
        if self.mixture and (self.dataset not in (None, "synthetic_shapes") or self.kwargs or self.eval_dataset):
            raise ValueError("mixture replaces dataset, kwargs and eval_dataset: set one or the other (each mixture "
                             "entry has its own kwargs)")
        if not self.mixture and self.dataset is None:
            raise ValueError("name a dataset, or give a mixture")
        names = [s.name or s.dataset for s in self.mixture]
        if len(set(names)) < len(names):
            raise ValueError(f"mixture: source name(s) {sorted({n for n in names if names.count(n) > 1})} appear "
                             "twice; give each entry its own name:")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must not exceed max_pixels ({self.max_pixels})")
        return self


class RolloutConfig(Section):
    group_size: int = Field(8, ge=2)  # G completions per prompt (>= 2: group-normalised advantages)
    prompts_per_step: int = Field(8, ge=1)  # per process
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)  # 0 = off
    generation_batch_size: int = Field(64, ge=1)  # sequences per generate() call (memory bound)
    staleness: int = Field(0, ge=0)  # train on the rollout generated this many steps back (an async trainer's lag)
    # pi_old: sampler (the sampler's own log-probs and MoE experts, no scoring forward) | score (a no-grad forward
    # of the policy) | auto (sampler where they equal a scoring forward's to float32 rounding: a float32 policy)
    old_logprobs: Literal["auto", "sampler", "score"] = "auto"
    # bfloat16: the rollout runs on a bf16 copy of the weights (a separate inference engine's numerics and routing);
    # with old_logprobs=sampler its log-probs and experts are pi_old (the train/inference mismatch stress)
    sampler_dtype: Literal["float32", "bfloat16"] = "float32"


class RewardConfig(Section):
    funcs: dict[str, float] = {"auto": 1.0}  # REWARDS name -> weight
    accuracy: str | None = None  # the function whose value == 1 counts as correct (default: first of funcs)
    num_workers: int = Field(4, ge=1)
    timeout_s: float = Field(600.0, ge=0)  # wall-clock budget of one step's scoring (0 = none); late samples score 0
    on_timeout: Literal["zero", "skip"] = "zero"  # zero: late samples keep reward 0 | skip: their groups leave

    @model_validator(mode="after")
    def _accuracy_is_scored(self):
        if not self.funcs:
            raise ValueError("funcs must name at least one reward function")
        if self.accuracy is not None and self.accuracy not in self.funcs:
            raise ValueError(f"accuracy ({self.accuracy!r}) must be one of funcs {sorted(self.funcs)}")
        return self


class WarmupConfig(Section):
    """Supervised warm-up before RL (sapo_vl.warmup). labels: shuffled (format only, accuracy stays at chance)
    or gold (plain SFT cold start). 0 steps = off."""

    steps: int = Field(0, ge=0)
    batch_size: int = Field(16, ge=1)
    lr: float = 3e-3
    labels: Literal["shuffled", "gold"] = "shuffled"


CorrectionMode = Literal["none", "token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]


class RolloutCorrection(Section):
    """Importance-sampling correction of a scored pi_old against the sampler's log-probs (sapo_vl.algos.correction):
    token_* / sequence_* (per token, or the sequence's geometric mean), *_truncate (TIS: weights clipped at the
    threshold) or *_mask (MIS: tokens / sequences over it dropped)."""

    mode: CorrectionMode = "none"
    threshold: float = Field(2.0, gt=1)


class AlgoConfig(Section):
    preset: str | None = None  # a paper's combination (sapo_vl.algos.ALGORITHMS): sets the keys below it
    policy_loss: str = "sapo"
    loss_hparams: dict = {}  # the policy loss's keyword hyperparameters; unset ones take the loss's defaults
    aggregation: str = "seq-mean-token-mean"
    advantage: str = "grpo"
    filter_zero_variance: bool = False  # DAPO dynamic sampling: drop groups whose rewards are all equal
    kl_beta: float = Field(0.0, ge=0)  # > 0 loads a frozen reference policy
    kl_estimator: str = "k3"
    moe_aux_coef: float = Field(0.0, ge=0)  # coefficient of the MoE router load-balancing loss (0 = off)
    routing_replay: Literal["none", "rollout"] = "none"  # rollout: training forwards use the rollout's experts
    rollout_correction: RolloutCorrection = RolloutCorrection()


class TrainConfig(Section):
    total_steps: int = Field(100, ge=1)
    lr: float = Field(1e-6, ge=0)
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(0, ge=0)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    max_grad_norm: float = Field(1.0, gt=0)
    num_mini_batches: int = Field(1, ge=1)  # optimizer steps per rollout batch (the SAPO paper uses 2 to 4)
    epochs: int = Field(1, ge=1)  # passes over each rollout batch
    micro_batch_tokens: int = Field(16384, ge=1)  # token budget (prompt + completion) per forward/backward
    packing: Literal["auto", "on", "off"] = "auto"  # padding-free packed micro-batches: auto = where exact
    prefix_sharing: Literal["auto", "off"] = "auto"  # auto: a micro-batch's repeated prompts run once
    logprob_chunk_size: int = Field(1024, ge=1)
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"  # auto: bf16 on CUDA
    sharding: Literal["any", "fsdp2"] = "any"  # fsdp2: refuse to start unless launched with FSDP2 over >= 2 ranks
    collective_timeout_s: float = 3600.0  # how long a rank waits in a collective (a large checkpoint or export)


Backend = Literal["jsonl", "tensorboard", "wandb", "trackio"]


class LogConfig(Section):
    backends: list[Backend] = ["jsonl", "tensorboard"]
    project: str = "sapo_vl"
    eval_every: int = Field(0, ge=0)  # steps between held-out evaluations (0 = only before and after)
    eval_limit: int = Field(200, ge=0)
    save_every: int = Field(0, ge=0)  # steps between checkpoints (0 = only at the end)
    keep_last: int = Field(2, ge=0)
    export: bool = True  # write the final policy as a Hugging Face model to OUTPUT_DIR/model (sapo-vl export)
    export_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: as trained
    progress: bool = True
    plot: bool = True

    @model_validator(mode="after")
    def _each_backend_once(self):
        if len(set(self.backends)) < len(self.backends):
            raise ValueError(f"backends: name each once, got {self.backends}")
        return self


class Config(Section):
    imports: list[str] = []  # plug-in modules imported before names are resolved
    output_dir: str = "runs/sapo_vl"
    seed: int = 0
    resume: str = "auto"  # auto: latest checkpoint in output_dir, if any | never | force | a checkpoint path
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    rollout: RolloutConfig = RolloutConfig()
    reward: RewardConfig = RewardConfig()
    warmup: WarmupConfig = WarmupConfig()
    algo: AlgoConfig = AlgoConfig()
    train: TrainConfig = TrainConfig()
    log: LogConfig = LogConfig()

    def to_dict(self) -> dict:
        return self.model_dump()

    @model_validator(mode="after")
    def _across_sections(self):
        if any(s.reward for s in self.data.mixture) and "auto" not in self.reward.funcs:
            raise ValueError("data.mixture[].reward routes records to a reward by their reward column, which only "
                             "reward 'auto' reads: add auto to reward.funcs")
        if self.algo.rollout_correction.mode != "none" and self.rollout.old_logprobs == "sampler":
            raise ValueError("algo.rollout_correction weighs a scored pi_old against the sampler's log-probs; with "
                             "rollout.old_logprobs=sampler they are pi_old (every weight 1): set it to score")
        n = self.rollout.prompts_per_step * self.rollout.group_size
        if n % self.train.num_mini_batches:
            raise ValueError(f"prompts_per_step x group_size ({n}) must be divisible by train.num_mini_batches "
                             f"({self.train.num_mini_batches})")
        return self


# ------------------------------------------------------------------------------------------- shared plumbing


def parse_override(item: str, error: type[UserError] = ConfigError) -> tuple[str, dict]:
    """``dotted.key=value`` -> (key, the nested mapping it sets); the value is read as YAML (``k=`` is null)."""
    if "=" not in item:
        raise error(f"override {item!r} is not of the form dotted.key=value")
    try:
        return item.split("=", 1)[0].strip(), OmegaConf.to_container(OmegaConf.from_dotlist([item]))
    except OmegaConfBaseException as err:
        raise error(f"override {item!r}: {str(err).splitlines()[0]}") from None


def sub_model(model: type[BaseModel] | None, name: str) -> type[BaseModel] | None:
    """The model of field ``name`` of ``model`` (through ``list[...]`` / ``X | None``), or None."""
    field = model.model_fields.get(name) if model is not None else None
    hint = field.annotation if field is not None else None
    while typing.get_args(hint) and not (isinstance(hint, type) and issubclass(hint, BaseModel)):
        hint = next((a for a in typing.get_args(hint) if a is not type(None)), None)
    return hint if isinstance(hint, type) and issubclass(hint, BaseModel) else None


def _dotted(loc: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _one_line(err: ValidationError, model: type[BaseModel], prefix: str) -> str:
    errors = err.errors()
    extra = [e["loc"] for e in errors if e["type"] == "extra_forbidden"]
    if extra:
        section = model
        for part in extra[0][:-1]:
            section = sub_model(section, part) if isinstance(part, str) else section
        where = (prefix + _dotted(extra[0][:-1]) + ".").lstrip(".")
        names = [str(loc[-1]) for loc in extra]
        close = [m for n in names for m in difflib.get_close_matches(n, list(section.model_fields), n=1)]
        hint = f" (did you mean {', '.join(where + m for m in close)}?)" if close else ""
        return (f"unknown key(s) {', '.join(where + n for n in names)}{hint}; valid keys: "
                f"{', '.join(where + k for k in section.model_fields)}")
    e = errors[0]
    parent, key = (prefix + _dotted(e["loc"][:-1])).rstrip("."), (prefix + _dotted(e["loc"])).rstrip(".")
    missing = [str(x["loc"][-1]) for x in errors if x["type"] == "missing" and x["loc"][:-1] == e["loc"][:-1]]
    if e["type"] == "missing" and isinstance(e["loc"][-1], int):  # a tuple of fixed length
        return f"{parent}: too few items, got {e['input']!r}"
    if missing:
        return f"{parent + ': ' if parent else ''}missing required key(s) {', '.join(missing)}"
    if e["type"] == "value_error":
        return f"{key + ': ' if key else ''}{e['msg'].removeprefix('Value error, ')}"
    what = "a mapping" if e["type"] in ("model_type", "dict_type") else e["msg"].removeprefix("Input should be ")
    what = f"a number {what}" if what.startswith(("greater", "less")) else what
    what = f"expected {what}" if e["msg"].startswith("Input should be ") or what == "a mapping" else what
    return f"{key or 'top level'}: {what}, got {e['input']!r}"


def validated(model: type[BaseModel], data: Any, where: str = "", error: type[UserError] = ConfigError,
              prefix: str = ""):
    """``model`` built from ``data``; a wrong key or value is one ``error`` line naming the dotted key (after
    ``prefix``), the value and what was expected, after ``where`` (e.g. a task file's path)."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise error(f"{where}: " * bool(where) + _one_line(err, model, prefix)) from None
