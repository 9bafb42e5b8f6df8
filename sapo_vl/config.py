"""Training configuration: dataclasses, YAML recipes and dotted command-line overrides.

    sapo-vl train recipes/tiny/demo.yaml output_dir=runs/x algo.policy_loss=grpo train.total_steps=50

The config is read here and turned into flat arguments at the edge (``sapo_vl.train``); nothing below the training
loop sees these classes. Defaults follow the SAPO paper: tau_pos 1.0, tau_neg 1.05, no KL, seq-mean-token-mean.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


@dataclass
class ModelConfig:
    path: str = "tiny"  # a local HF checkpoint directory, or "tiny" to build the offline tiny model on the fly
    tiny: dict = field(default_factory=dict)  # TinyConfig overrides when path == "tiny" (e.g. {moe: true, seed: 0})
    dtype: str = "auto"  # auto = bf16 on capable CUDA, fp32 elsewhere
    attn_implementation: str = "auto"  # auto = flash_attention_2 if installed on CUDA, else sdpa
    experts_implementation: str | None = None  # eager | batched_mm | grouped_mm
    gradient_checkpointing: bool = False
    freeze_vision: bool = False


@dataclass
class DataConfig:
    dataset: str = "synthetic_shapes"  # a name in sapo_vl.data.DATASETS (jsonl / parquet / disk take path=)
    kwargs: dict = field(default_factory=dict)
    split: str = "train"
    eval_dataset: str | None = None  # default: same dataset
    eval_kwargs: dict = field(default_factory=dict)
    eval_split: str = "test"
    system_prompt: str | None = None
    max_prompt_length: int = 2048
    min_pixels: int | None = None
    max_pixels: int | None = None
    on_error: str = "raise"  # raise | skip


@dataclass
class RolloutConfig:
    group_size: int = 8  # G completions per prompt
    prompts_per_step: int = 8  # per process
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    generation_batch_size: int = 64  # sequences per generate() call (memory bound)


@dataclass
class RewardConfig:
    funcs: dict = field(default_factory=lambda: {"auto": 1.0})  # REWARDS name -> weight
    accuracy: str | None = None  # the function whose value == 1 counts as correct (default: first of funcs)
    num_workers: int = 4


@dataclass
class WarmupConfig:
    """Supervised warm-up before RL (sapo_vl.warmup). labels: shuffled (format only, accuracy stays at chance)
    or gold (plain SFT cold start). 0 steps = off."""

    steps: int = 0
    batch_size: int = 16
    lr: float = 3e-3
    labels: str = "shuffled"


@dataclass
class AlgoConfig:
    policy_loss: str = "sapo"  # sapo | grpo | gspo | gspo-token | cispo
    loss_hparams: dict = field(default_factory=dict)  # e.g. {tau_pos: 1.0, tau_neg: 1.05} or {eps_high: 0.28}
    aggregation: str = "seq-mean-token-mean"
    advantage: str = "grpo"  # grpo | dr_grpo | rloo
    filter_zero_variance: bool = False  # DAPO dynamic sampling: drop groups whose rewards are all equal
    kl_beta: float = 0.0  # > 0 loads a frozen reference policy
    kl_estimator: str = "k3"
    moe_aux_coef: float = 0.0  # coefficient of the MoE router load-balancing loss (0 = off)


@dataclass
class TrainConfig:
    total_steps: int = 100
    lr: float = 1e-6
    weight_decay: float = 0.0
    adam_betas: tuple = (0.9, 0.999)
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # constant | cosine
    max_grad_norm: float = 1.0
    num_mini_batches: int = 1  # optimizer steps per rollout batch (the SAPO paper uses 2 to 4)
    epochs: int = 1  # passes over each rollout batch
    micro_batch_tokens: int = 16384  # token budget (prompt + completion) per forward/backward
    logprob_chunk_size: int = 1024
    mixed_precision: str = "auto"  # auto (bf16 on CUDA) | no | bf16


@dataclass
class LogConfig:
    backends: list = field(default_factory=lambda: ["jsonl", "tensorboard"])  # + wandb | trackio
    project: str = "sapo_vl"
    eval_every: int = 0  # steps between held-out evaluations (0 = only before and after)
    eval_limit: int = 200
    save_every: int = 0  # steps between checkpoints (0 = only at the end)
    keep_last: int = 2
    progress: bool = True
    plot: bool = True


@dataclass
class Config:
    output_dir: str = "runs/sapo_vl"
    seed: int = 0
    resume: str = "auto"  # auto (latest checkpoint in output_dir if any) | never | a checkpoint path
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict:
        return asdict(self)


class ConfigError(ValueError):
    pass


def _valid_keys(cls, prefix: str = "") -> list[str]:
    keys = []
    for f in fields(cls):
        sub = _sub_dataclass(cls, f.name)
        keys.extend(_valid_keys(sub, f"{prefix}{f.name}.") if sub else [f"{prefix}{f.name}"])
    return keys


def describe_config(cls=Config, prefix: str = "") -> list[str]:
    """Every dotted key with its default, for ``sapo-vl train --help``."""
    lines = []
    defaults = cls()
    for f in fields(cls):
        sub = _sub_dataclass(cls, f.name)
        if sub:
            lines.extend(describe_config(sub, f"{prefix}{f.name}."))
        else:
            lines.append(f"  {prefix}{f.name} = {getattr(defaults, f.name)!r}")
    return lines


def _sub_dataclass(cls, name: str):
    f = {f.name: f for f in fields(cls)}[name]
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        if dataclasses.is_dataclass(value):
            return type(value)
    return None


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        close = [m for u in unknown for m in difflib.get_close_matches(u, sorted(names), n=1)]
        hint = f" (did you mean {', '.join(prefix + m for m in close)}?)" if close else ""
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + u for u in unknown)}{hint}; "
                          f"valid keys: {', '.join(_valid_keys(cls, prefix))}")
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        sub = _sub_dataclass(cls, name)
        key = f"{where}.{name}" if where else name
        kwargs[name] = _build(sub, value, key) if sub else _coerce(value, hints[name], key)
    return cls(**kwargs)


_NUMERIC_DICTS = ("algo.loss_hparams", "reward.funcs")  # their values are numbers (hyperparameters, weights)


def _number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-6`` (no dot) as a string; numeric strings become numbers, anything else is unchanged."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the field's annotation (int, float, bool, str, dict, list, tuple, or X | None)."""
    args = typing.get_args(hint)
    if args and type(None) in args:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is float:
        value = _number(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        value = _number(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif hint in (list, tuple):
        if isinstance(value, (list, tuple)):
            return hint(value)
    elif hint is dict:
        if isinstance(value, dict):
            return {k: _number(v) for k, v in value.items()} if key in _NUMERIC_DICTS else value
    else:
        return value
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{key}: expected {name}{' or null' if args else ''}, got {value!r} ({type(value).__name__})")


def _split_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form dotted.key=value")
    key, raw = item.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict:
    """["a.b=1", "c=[x, y]"] -> nested dict, values parsed as YAML scalars/lists."""
    tree: dict = {}
    for item in overrides:
        _set_dotted(tree, *_split_override(item))
    return tree


def _section(cls, name: str):
    """The dataclass of section ``name`` of ``cls`` (None for a plain field, an unknown name or no ``cls``)."""
    if cls is None or name not in {f.name for f in fields(cls)}:
        return None
    return _sub_dataclass(cls, name)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``dotted.key=value`` overrides in order to a recipe's data. A mapping given to a config section
    merges into it (``train={lr: 0.1}`` keeps the other train keys); given to a dict-valued field
    (``reward.funcs``, ``algo.loss_hparams``, ``data.kwargs``, ...) it replaces the whole dict."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, value = _split_override(item)
        parts = key.split(".")
        node, cls = out, Config
        for p in parts[:-1]:
            node, cls = node.setdefault(p, {}), _section(cls, p)
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {p!r} is not a section")
        last = parts[-1]
        if _section(cls, last) and isinstance(value, dict) and isinstance(node.get(last), dict):
            value = _merge(node[last], value)
        node[last] = value
    return out


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(recipe: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML recipe, apply dotted overrides, and validate every key."""
    data: dict = {}
    if recipe is not None:
        path = Path(recipe)
        if not path.is_file():
            raise ConfigError(f"recipe not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a recipe must be a YAML mapping")
        if "distributed_type" in data:
            raise ConfigError(f"{path} is an accelerate config, not a training recipe: accelerate launch "
                              f"--config_file {path} -m sapo_vl.cli train RECIPE.yaml")
    data = apply_overrides(data, overrides or [])
    cfg = _build(Config, data, "")
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    from sapo_vl.algos import ADVANTAGES, AGGREGATION_MODES, KL_ESTIMATORS, POLICY_LOSSES

    r, t = cfg.rollout, cfg.train
    checks = [
        (cfg.algo.policy_loss in POLICY_LOSSES, f"algo.policy_loss must be one of {sorted(POLICY_LOSSES)}"),
        (cfg.algo.aggregation in AGGREGATION_MODES, f"algo.aggregation must be one of {list(AGGREGATION_MODES)}"),
        (cfg.algo.advantage in ADVANTAGES, f"algo.advantage must be one of {sorted(ADVANTAGES)}"),
        (cfg.algo.kl_estimator in KL_ESTIMATORS, f"algo.kl_estimator must be one of {sorted(KL_ESTIMATORS)}"),
        (cfg.algo.kl_beta >= 0 and cfg.algo.moe_aux_coef >= 0, "algo.kl_beta and algo.moe_aux_coef must be >= 0"),
        (r.group_size >= 2, "rollout.group_size must be >= 2 (group-normalised advantages)"),
        (r.prompts_per_step >= 1, "rollout.prompts_per_step must be >= 1"),
        (r.max_new_tokens >= 1 and r.generation_batch_size >= 1,
         "rollout.max_new_tokens and rollout.generation_batch_size must be >= 1"),
        (r.temperature > 0 and 0 < r.top_p <= 1 and r.top_k >= 0,
         "rollout.temperature must be > 0, rollout.top_p in (0, 1], rollout.top_k >= 0 (0 = off)"),
        (t.total_steps >= 1 and t.epochs >= 1 and t.micro_batch_tokens >= 1 and t.logprob_chunk_size >= 1,
         "train.total_steps, train.epochs, train.micro_batch_tokens and train.logprob_chunk_size must be >= 1"),
        (t.lr >= 0 and t.max_grad_norm > 0 and t.warmup_steps >= 0,
         "train.lr and train.warmup_steps must be >= 0, train.max_grad_norm > 0"),
        (len(t.adam_betas) == 2, "train.adam_betas must be two numbers, e.g. [0.9, 0.999]"),
        (cfg.train.num_mini_batches >= 1, "train.num_mini_batches must be >= 1"),
        (cfg.warmup.labels in ("shuffled", "gold"), "warmup.labels must be shuffled or gold"),
        (cfg.warmup.steps >= 0 and cfg.warmup.batch_size >= 1, "warmup.steps must be >= 0, warmup.batch_size >= 1"),
        (cfg.train.lr_schedule in ("constant", "cosine"), "train.lr_schedule must be constant or cosine"),
        (cfg.data.on_error in ("raise", "skip"), "data.on_error must be raise or skip"),
        (cfg.train.mixed_precision in ("auto", "no", "bf16"), "train.mixed_precision must be auto, no or bf16"),
        (bool(cfg.reward.funcs), "reward.funcs must name at least one reward function"),
        (cfg.reward.accuracy is None or cfg.reward.accuracy in cfg.reward.funcs,
         f"reward.accuracy ({cfg.reward.accuracy!r}) must be one of reward.funcs {sorted(cfg.reward.funcs)}"),
        (min(cfg.log.eval_every, cfg.log.eval_limit, cfg.log.save_every, cfg.log.keep_last) >= 0,
         "log.eval_every, log.eval_limit, log.save_every and log.keep_last must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    _check_loss_hparams(cfg.algo.policy_loss, cfg.algo.loss_hparams)
    n = cfg.rollout.prompts_per_step * cfg.rollout.group_size
    if n % cfg.train.num_mini_batches:
        raise ConfigError(f"prompts_per_step x group_size ({n}) must be divisible by train.num_mini_batches "
                          f"({cfg.train.num_mini_batches})")


def _check_loss_hparams(name: str, hparams: dict) -> None:
    """Names, types and ranges of the loss hyperparameters, now rather than at the first update: the loss is
    evaluated once on a one-token batch."""
    import torch

    from sapo_vl.algos import UnknownArgumentError, get_policy_loss

    one = torch.zeros(1, 1)
    try:
        get_policy_loss(name)(logprobs=one, old_logprobs=one, advantages=torch.ones(1),
                              response_mask=torch.ones(1, 1, dtype=torch.bool), **hparams)
    except UnknownArgumentError as err:
        raise ConfigError(f"algo.loss_hparams: {err}. A recipe's hyperparameters belong to its loss: with another "
                          f"algo.policy_loss, replace them all, e.g. 'algo.loss_hparams={{}}'") from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"algo.loss_hparams: {err}") from None


def config_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(config_yaml(cfg))
