"""Training configuration: dataclasses, YAML recipes and dotted command-line overrides.

    sapo-vl train recipes/tiny/demo.yaml output_dir=runs/x algo.policy_loss=grpo train.total_steps=50

Components receive their own section (``PolicyUpdate`` gets ``algo``, ``train`` and ``rollout``; ``warmup`` its
section; the data layer ``data``), never the whole ``Config``. Names (datasets, rewards, losses, advantages, presets)
are resolved against the registries when the config is loaded, after the recipe's ``imports:`` and any
``--import`` plug-ins are imported, so a typo fails before any model is built. Defaults follow the SAPO paper:
tau_pos 1.0, tau_neg 1.05, no KL, seq-mean-token-mean.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from sapo_vl.errors import ConfigError

__all__ = ["Config", "ConfigError", "DataSource", "describe_config", "load_config", "save_config"]


@dataclass
class ModelConfig:
    path: str = "tiny"  # a local HF checkpoint directory, or "tiny" to build the offline tiny model on the fly
    tiny: dict = field(default_factory=dict)  # TinyConfig overrides when path == "tiny" (e.g. {moe: true, seed: 0})
    # trained weights, gradients and AdamW state: auto / float32 = fp32 master weights (bf16 compute on GPUs through
    # train.mixed_precision) | bfloat16 = pure bf16 (weights, gradients and both AdamW moments bf16, half the memory)
    dtype: str = "auto"
    attn_implementation: str = "auto"  # auto = flash_attention_2 if installed on CUDA, else sdpa
    experts_implementation: str | None = None  # eager | batched_mm | grouped_mm
    gradient_checkpointing: bool = False
    freeze_vision: bool = False


@dataclass
class DataSource:
    """One entry of ``data.mixture``: a registered dataset sampled with probability proportional to ``weight``."""

    dataset: str
    weight: float = 1.0
    kwargs: dict = field(default_factory=dict)  # options of the dataset's builder
    reward: str | None = None  # score this source's records with this reward (routed by reward.funcs' auto)
    name: str | None = None  # its name in metrics (reward/by_source/<name>); default: the dataset name
    split: str | None = None  # default: data.split
    eval_split: str | None = None  # default: data.eval_split
    eval_kwargs: dict = field(default_factory=dict)  # extra builder options for the held-out split


@dataclass
class DataConfig:
    dataset: str = "synthetic_shapes"  # a name in sapo_vl.data.DATASETS (jsonl / json / parquet / disk take path=)
    kwargs: dict = field(default_factory=dict)
    split: str = "train"
    eval_dataset: str | None = None  # default: same dataset
    eval_kwargs: dict = field(default_factory=dict)
    eval_split: str = "test"
    mixture: list[DataSource] = field(default_factory=list)  # several datasets by weight (replaces dataset)
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
    staleness: int = 0  # train on the rollout generated this many steps back (an asynchronous trainer's lag)
    # pi_old: sampler (the sampler's own log-probs and MoE experts, no scoring forward) | score (a no-grad forward
    # of the policy) | auto (sampler where they equal a scoring forward's to float32 rounding: a float32 policy)
    old_logprobs: str = "auto"


@dataclass
class RewardConfig:
    funcs: dict = field(default_factory=lambda: {"auto": 1.0})  # REWARDS name -> weight
    accuracy: str | None = None  # the function whose value == 1 counts as correct (default: first of funcs)
    num_workers: int = 4
    timeout_s: float = 600.0  # wall-clock budget of one step's scoring (0 = none); late samples score 0
    on_timeout: str = "zero"  # zero: late samples keep reward 0 | skip: their groups leave the update


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
    preset: str | None = None  # a paper's combination (sapo_vl.algos.ALGORITHMS): sets the keys below it
    policy_loss: str = "sapo"
    loss_hparams: dict = field(default_factory=dict)  # e.g. {tau_pos: 1.0, tau_neg: 1.05} or {eps_high: 0.28}
    aggregation: str = "seq-mean-token-mean"
    advantage: str = "grpo"
    filter_zero_variance: bool = False  # DAPO dynamic sampling: drop groups whose rewards are all equal
    kl_beta: float = 0.0  # > 0 loads a frozen reference policy
    kl_estimator: str = "k3"
    moe_aux_coef: float = 0.0  # coefficient of the MoE router load-balancing loss (0 = off)
    routing_replay: str = "none"  # none | rollout: training forwards use the experts the rollout forward chose


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
    packing: str = "auto"  # padding-free packed micro-batches: auto = where exact for the model | on | off
    prefix_sharing: str = "auto"  # auto: a micro-batch's repeated prompts run once, their KV cache shared | off
    logprob_chunk_size: int = 1024
    mixed_precision: str = "auto"  # auto: bf16 on CUDA
    sharding: str = "any"  # fsdp2: refuse to start unless launched with FSDP2 over >= 2 processes (sized for it)
    collective_timeout_s: float = 3600.0  # how long a rank waits in a collective (a large checkpoint or export)


@dataclass
class LogConfig:
    backends: list = field(default_factory=lambda: ["jsonl", "tensorboard"])  # + wandb | trackio
    project: str = "sapo_vl"
    eval_every: int = 0  # steps between held-out evaluations (0 = only before and after)
    eval_limit: int = 200
    save_every: int = 0  # steps between checkpoints (0 = only at the end)
    keep_last: int = 2
    export: bool = True  # write the final policy as a Hugging Face model to OUTPUT_DIR/model (sapo-vl export)
    export_dtype: str = "auto"  # auto: as trained (fp32 master weights or bf16) | bfloat16 | float32 | float16
    progress: bool = True
    plot: bool = True


@dataclass
class Config:
    imports: list = field(default_factory=list)  # plug-in modules imported before names are resolved
    output_dir: str = "runs/sapo_vl"
    seed: int = 0
    resume: str = "auto"  # auto: latest checkpoint in output_dir, if any | never | force | a checkpoint path
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


def _valid_keys(cls, prefix: str = "") -> list[str]:
    keys = []
    for f in fields(cls):
        sub = _sub_dataclass(cls, f.name)
        keys.extend(_valid_keys(sub, f"{prefix}{f.name}.") if sub else [f"{prefix}{f.name}"])
    return keys


def choices() -> dict[str, Any]:
    """The allowed values of every enumerated key: the registries (plug-ins included) and fixed lists."""
    from sapo_vl.algos import ADVANTAGES, AGGREGATION_MODES, ALGORITHMS, KL_ESTIMATORS, POLICY_LOSSES
    from sapo_vl.data import DATASETS
    from sapo_vl.rewards import REWARDS

    return {
        "data.dataset": DATASETS, "data.eval_dataset": DATASETS, "data.on_error": ("raise", "skip"),
        "reward.funcs": REWARDS, "reward.accuracy": REWARDS, "warmup.labels": ("shuffled", "gold"),
        "algo.preset": ALGORITHMS, "algo.policy_loss": POLICY_LOSSES, "algo.aggregation": AGGREGATION_MODES,
        "algo.advantage": ADVANTAGES, "algo.kl_estimator": KL_ESTIMATORS, "train.lr_schedule": ("constant", "cosine"),
        "train.mixed_precision": ("auto", "no", "bf16"), "train.sharding": ("any", "fsdp2"),
        "resume": ("auto", "never", "force", "PATH"),
        "reward.on_timeout": ("zero", "skip"), "data.mixture[].reward": REWARDS,
        "algo.routing_replay": ("none", "rollout"), "train.packing": ("auto", "on", "off"),
        "train.prefix_sharing": ("auto", "off"), "rollout.old_logprobs": ("auto", "sampler", "score"),
        "log.backends": ("jsonl", "tensorboard", "wandb", "trackio"),
        "model.dtype": ("auto", "float32", "fp32", "bfloat16", "bf16"),
        "log.export_dtype": ("auto", "float32", "bfloat16", "float16"),
    }


def describe_config(cls=Config, prefix: str = "", allowed: dict | None = None) -> list[str]:
    """Every dotted key with its default and, for enumerated keys, the allowed values (``sapo-vl train --help``)."""
    allowed = choices() if allowed is None else allowed
    lines = []
    for f in fields(cls):
        sub = _sub_dataclass(cls, f.name)
        if sub:
            lines.extend(describe_config(sub, f"{prefix}{f.name}.", allowed))
            continue
        key = f"{prefix}{f.name}"
        values = allowed.get(key) or allowed.get(key.replace("data.mixture[].", "data."))
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        shown = "<required>" if default is dataclasses.MISSING else repr(default)
        lines.append(f"  {key} = {shown}" + (f"  ({' | '.join(values)})" if values else ""))
        if key == "data.mixture":
            lines.extend(describe_config(DataSource, "data.mixture[].", allowed))
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
    missing = [f.name for f in fields(cls) if f.name not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
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
    if typing.get_origin(hint) is list and dataclasses.is_dataclass(typing.get_args(hint)[0]):
        if isinstance(value, list):
            return [_build(typing.get_args(hint)[0], item, f"{key}[{i}]") for i, item in enumerate(value)]
        hint = list
    elif hint is float:
        value = _number(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
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


def _section(cls, name: str):
    """The dataclass of section ``name`` of ``cls`` (None for a plain field, an unknown name or no ``cls``)."""
    if cls is None or name not in {f.name for f in fields(cls)}:
        return None
    return _sub_dataclass(cls, name)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``dotted.key=value`` overrides in order to a recipe's data. A mapping given to a config section
    merges into it (``train={lr: 0.1}`` keeps the other train keys); given to a dict-valued field
    (``reward.funcs``, ``algo.loss_hparams``, ``data.kwargs``, ...) it replaces the whole dict. ``algo.preset=X``
    resets the algorithm keys to the preset's (later overrides still change them)."""
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
        if key in ("algo.preset", "algo") and isinstance(out.get("algo"), dict) and out["algo"].get("preset"):
            out["algo"] = _with_preset(out["algo"], replace=True)
    return out


def _with_preset(algo: dict, replace: bool) -> dict:
    """``algo`` with its preset's keys: under the explicit keys (a recipe's own preset), or over them (an
    override naming a preset)."""
    from sapo_vl.algos import ALGORITHMS
    from sapo_vl.registry import unknown_name

    name = algo["preset"]
    if name not in ALGORITHMS:
        raise ConfigError(f"algo.preset: {unknown_name('algorithm preset', name, list(ALGORITHMS))}")
    keys = ALGORITHMS[name].algo_keys()
    return {**algo, **keys} if replace else {**keys, **algo}


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(recipe: str | Path | None = None, overrides: list[str] | None = None,
                imports: list[str] | None = None) -> Config:
    """Read a YAML recipe, import its plug-ins (``imports:``, then ``imports`` such as ``--import``, then the
    ``sapo_vl.plugins`` entry points), apply dotted overrides, and validate every key and name."""
    from sapo_vl.plugins import import_plugins, load_entry_points

    data: dict = {}
    base_dir = None
    if recipe is not None:
        path = Path(recipe)
        if not path.is_file():
            raise ConfigError(f"recipe not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a recipe must be a YAML mapping")
        if "distributed_type" in data:
            raise ConfigError(f"{path} is an accelerate config, not a training recipe: accelerate launch "
                              f"--config_file {path} -m sapo_vl.cli train RECIPE.yaml")
        base_dir = path.resolve().parent
        if isinstance(data.get("algo"), dict) and data["algo"].get("preset"):
            data["algo"] = _with_preset(data["algo"], replace=False)
    data = apply_overrides(data, overrides or [])
    data["imports"] = list(data.get("imports") or []) + [m for m in imports or [] if m not in (data.get("imports")
                                                                                                 or [])]
    cfg = _build(Config, data, "")
    load_entry_points()
    import_plugins(cfg.imports, base_dir)
    validate(cfg)
    return cfg


def _check_names(cfg: Config, allowed: dict) -> None:
    """Every name in the config is registered (plug-ins included): the registry's unknown-name error otherwise."""
    d = cfg.data
    names = [("algo.policy_loss", cfg.algo.policy_loss), ("algo.advantage", cfg.algo.advantage)]
    names += [("reward.funcs", name) for name in cfg.reward.funcs]
    for i, src in enumerate(d.mixture):
        names += [(f"data.mixture[{i}].dataset", src.dataset)]
        names += [(f"data.mixture[{i}].reward", src.reward)] if src.reward else []
    if not d.mixture:
        names += [("data.dataset", d.dataset)] + ([("data.eval_dataset", d.eval_dataset)] if d.eval_dataset else [])
    for key, name in names:
        kind = {"dataset": "data.dataset", "reward": "reward.funcs"}.get(key.rsplit(".", 1)[-1], key)
        allowed[kind].check(name, key)


def _check_choices(cfg: Config, allowed: dict) -> None:
    for key in ("data.on_error", "warmup.labels", "algo.aggregation", "algo.kl_estimator", "train.lr_schedule",
                "train.mixed_precision", "train.sharding", "reward.on_timeout", "algo.routing_replay",
                "train.packing", "train.prefix_sharing", "rollout.old_logprobs", "model.dtype", "log.export_dtype"):
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed[key]:
            raise ConfigError(f"{key} must be one of {' | '.join(allowed[key])}, got {value!r}")
    bad = [b for b in cfg.log.backends if b not in allowed["log.backends"]]
    if bad or len(set(cfg.log.backends)) != len(cfg.log.backends):
        raise ConfigError(f"log.backends: {bad or cfg.log.backends} (each once, of "
                          f"{' | '.join(allowed['log.backends'])})")


def _check_mixture(d) -> None:
    if not d.mixture:
        return
    if d.dataset != DataConfig.dataset or d.kwargs or d.eval_dataset:
        raise ConfigError("data.mixture replaces data.dataset, data.kwargs and data.eval_dataset: set one or the "
                          "other (each mixture entry has its own kwargs)")
    names = [s.name or s.dataset for s in d.mixture]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"data.mixture: source name(s) {dup} appear twice; give each entry its own name:")
    for i, s in enumerate(d.mixture):
        if not s.weight > 0:
            raise ConfigError(f"data.mixture[{i}].weight must be > 0, got {s.weight}")


def validate(cfg: Config) -> None:
    allowed = choices()
    _check_names(cfg, allowed)
    _check_choices(cfg, allowed)
    _check_mixture(cfg.data)
    r, t = cfg.rollout, cfg.train
    checks = [
        (cfg.algo.kl_beta >= 0 and cfg.algo.moe_aux_coef >= 0, "algo.kl_beta and algo.moe_aux_coef must be >= 0"),
        (r.group_size >= 2, "rollout.group_size must be >= 2 (group-normalised advantages)"),
        (r.prompts_per_step >= 1 and r.staleness >= 0,
         "rollout.prompts_per_step must be >= 1 and rollout.staleness >= 0"),
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
        (cfg.warmup.steps >= 0 and cfg.warmup.batch_size >= 1, "warmup.steps must be >= 0, warmup.batch_size >= 1"),
        (bool(cfg.reward.funcs), "reward.funcs must name at least one reward function"),
        (all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
             for w in cfg.reward.funcs.values()),
         f"reward.funcs weights must be finite numbers, got {cfg.reward.funcs}"),
        (cfg.reward.accuracy is None or cfg.reward.accuracy in cfg.reward.funcs,
         f"reward.accuracy ({cfg.reward.accuracy!r}) must be one of reward.funcs {sorted(cfg.reward.funcs)}"),
        (not any(s.reward for s in cfg.data.mixture) or "auto" in cfg.reward.funcs,
         "data.mixture[].reward routes records to a reward by their reward column, which only reward 'auto' reads: "
         "add auto to reward.funcs"),
        (min(cfg.log.eval_every, cfg.log.eval_limit, cfg.log.save_every, cfg.log.keep_last) >= 0,
         "log.eval_every, log.eval_limit, log.save_every and log.keep_last must be >= 0"),
        (not (cfg.data.min_pixels and cfg.data.max_pixels) or cfg.data.min_pixels <= cfg.data.max_pixels,
         f"data.min_pixels ({cfg.data.min_pixels}) must not exceed data.max_pixels ({cfg.data.max_pixels})"),
        (cfg.reward.timeout_s >= 0 and cfg.reward.num_workers >= 1,
         "reward.timeout_s must be >= 0 (0 = no limit) and reward.num_workers >= 1"),
        (cfg.data.max_prompt_length >= 1, "data.max_prompt_length must be >= 1"),
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


# keys that may change when a run resumes: how long it runs, where and how it logs, how work is batched
SAFE_ON_RESUME = ("output_dir", "resume", "imports", "train.total_steps", "log.", "reward.num_workers",
                  "reward.timeout_s", "rollout.generation_batch_size", "train.micro_batch_tokens",
                  "train.logprob_chunk_size", "train.packing", "train.prefix_sharing", "train.sharding",
                  "train.collective_timeout_s")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree and all(isinstance(k, str) for k in tree) and not prefix.endswith(
            ("kwargs.", "loss_hparams.", "funcs.", "tiny.")):
        return {k: v for key, value in tree.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def check_resume(saved: dict | None, cfg: Config, checkpoint: Path) -> None:
    """A resumed run continues the same experiment: every key that changed since ``checkpoint`` was written must
    be safe to change (``SAFE_ON_RESUME``), unless ``resume=force``."""
    if saved is None:  # a checkpoint from before configs were stored in it
        return
    old, new = _flat(saved), _flat(cfg.to_dict())
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
               and not any(k == s or (s.endswith(".") and k.startswith(s)) for s in SAFE_ON_RESUME)]
    if changed and cfg.resume != "force":
        shown = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:8])
        raise ConfigError(f"resuming {checkpoint} with a different experiment ({shown}"
                          f"{'; ...' if len(changed) > 8 else ''}). Use a new output_dir, or resume=force to continue "
                          "anyway")


def config_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(config_yaml(cfg))
