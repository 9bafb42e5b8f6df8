"""Loading the training config: a YAML recipe, plug-ins, dotted command-line overrides, then validation.

    sapo-vl train recipes/tiny/demo.yaml output_dir=runs/x algo.policy_loss=grpo train.total_steps=50

OmegaConf reads the recipe and the overrides and merges them; the typed sections of ``sapo_vl.sections``
(pydantic) check every key and value. Names (datasets, rewards, losses, advantages, presets, ...) are checked
against the registries after the recipe's ``imports:`` and any ``--import`` plug-ins are imported, and
``algo.loss_hparams`` against the chosen loss's own keyword defaults, so every mistake is one line before any
model is built.
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
import json
import typing
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, create_model

from sapo_vl.algos import (ADVANTAGES, AGGREGATION_MODES, ALGORITHMS, KL_ESTIMATORS, POLICY_LOSSES,
                           UnknownArgumentError, loss_hparams)
from sapo_vl.algos.types import hparam_names
from sapo_vl.data import DATASETS
from sapo_vl.errors import ConfigError
from sapo_vl.plugins import import_plugins, load_entry_points
from sapo_vl.registry import unknown_name
from sapo_vl.rewards import REWARDS
from sapo_vl.sections import (AlgoConfig, Config, DataConfig, DataSource, LogConfig, ModelConfig,  # noqa: F401
                               RewardConfig, RolloutConfig, TrainConfig, WarmupConfig, parse_override, sub_model,
                               validated)  # the sections are re-exported: callers import them from here too


def _named_keys() -> dict[str, Any]:
    """The registry (or fixed list) of every key that names a registered thing; plug-ins included."""
    return {"data.dataset": DATASETS, "data.eval_dataset": DATASETS, "data.mixture[].dataset": DATASETS,
            "data.mixture[].reward": REWARDS, "reward.funcs": REWARDS, "reward.accuracy": REWARDS,
            "algo.preset": ALGORITHMS, "algo.policy_loss": POLICY_LOSSES, "algo.aggregation": AGGREGATION_MODES,
            "algo.advantage": ADVANTAGES, "algo.kl_estimator": KL_ESTIMATORS, "resume": ("auto", "never", "force",
                                                                                        "PATH")}


def _check_name(names: Any, name: str, key: str) -> None:
    """The registry's unknown-name error (with its did-you-mean) for a name ``names`` does not hold."""
    if hasattr(names, "check"):
        names.check(name, key)
    elif name not in names:
        raise ConfigError(f"{key}: {unknown_name(key.rsplit('.', 1)[-1].replace('_', ' '), name, list(names))}")


# ------------------------------------------------------------------------------------------ recipe + overrides


def _read_recipe(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}")
    try:
        data = OmegaConf.to_container(OmegaConf.load(path))
    except (OmegaConfBaseException, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping")
    if "distributed_type" in data:
        raise ConfigError(f"{path} is an accelerate config, not a training recipe: accelerate launch "
                          f"--config_file {path} -m sapo_vl.cli train RECIPE.yaml")
    return data


def _with_preset(algo: dict, replace: bool) -> dict:
    """``algo`` with its preset's keys: under the explicit keys (a recipe's own preset), or over them (an
    override naming a preset)."""
    _check_name(ALGORITHMS, algo["preset"], "algo.preset")
    keys = ALGORITHMS[algo["preset"]].algo_keys()
    return {**algo, **keys} if replace else {**keys, **algo}


# an override of one of these drops the recipe's others: a mixture replaces the single dataset and vice versa
_REPLACES = {"data.mixture": ("dataset", "kwargs", "eval_dataset", "eval_kwargs"), "data.dataset": ("mixture",)}


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``dotted.key=value`` overrides in order. A mapping given to a section merges into it
    (``train={lr: 0.1}`` keeps the other train keys); any other value replaces what was there, so a mapping given
    to a dict-valued key (``reward.funcs``, ``algo.loss_hparams``, ``data.kwargs``, ...) replaces the whole dict.
    ``data.mixture=[...]`` replaces the recipe's ``data.dataset`` (and its kwargs), ``algo.preset=X`` resets the
    algorithm keys to the preset's (later overrides still change them)."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, tree = parse_override(item)
        *parents, last = key.split(".")
        node, model, value = out, Config, tree
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
            model, value = sub_model(model, p), value[p]
        if isinstance(node, dict) and not (sub_model(model, last) and isinstance(value[last], dict)):
            node.pop(last, None)
        if isinstance(out.get("data"), dict) and key in _REPLACES and value[last] is not None:
            for other in _REPLACES[key]:
                out["data"].pop(other, None)
        try:
            out = OmegaConf.to_container(OmegaConf.merge(out, tree))
        except (OmegaConfBaseException, TypeError) as err:
            raise ConfigError(f"override {item!r}: {str(err).splitlines()[0]}") from None
        if key in ("algo.preset", "algo") and isinstance(out.get("algo"), dict) and out["algo"].get("preset"):
            out["algo"] = _with_preset(out["algo"], replace=True)
    return out


def load_config(recipe: str | Path | None = None, overrides: list[str] | None = None,
                imports: list[str] | None = None) -> Config:
    """Read a YAML recipe, apply dotted overrides, import its plug-ins (``imports:``, then ``imports`` such as
    ``--import``, then the ``sapo_vl.plugins`` entry points), and validate every key, name and loss
    hyperparameter."""
    data = _read_recipe(Path(recipe)) if recipe is not None else {}
    if isinstance(data.get("algo"), dict) and data["algo"].get("preset"):
        data["algo"] = _with_preset(data["algo"], replace=False)
    data = apply_overrides(data, overrides or [])
    recipe_imports = data.get("imports") or []
    if isinstance(recipe_imports, list):
        data["imports"] = recipe_imports + [m for m in imports or [] if m not in recipe_imports]
    cfg = validated(Config, data)
    load_entry_points()
    import_plugins(cfg.imports, Path(recipe).resolve().parent if recipe is not None else None)
    _check_names(cfg)
    cfg.algo.loss_hparams = checked_loss_hparams(cfg.algo.policy_loss, cfg.algo.loss_hparams)
    return cfg


def _check_names(cfg: Config) -> None:
    d, names = cfg.data, _named_keys()
    checks = [(k, k, getattr(getattr(cfg, k.split(".")[0]), k.split(".")[1]))
              for k in ("algo.policy_loss", "algo.advantage", "algo.aggregation", "algo.kl_estimator")]
    checks += [("reward.funcs", "reward.funcs", name) for name in cfg.reward.funcs]
    for i, src in enumerate(d.mixture):
        checks += [("data.mixture[].dataset", f"data.mixture[{i}].dataset", src.dataset)]
        checks += [("data.mixture[].reward", f"data.mixture[{i}].reward", src.reward)] * bool(src.reward)
    if not d.mixture:
        checks += [("data.dataset", "data.dataset", d.dataset)]
        checks += [("data.eval_dataset", "data.eval_dataset", d.eval_dataset)] * bool(d.eval_dataset)
    for kind, key, name in checks:
        _check_name(names[kind], name, key)


# ------------------------------------------------------------------------------------------ loss hyperparameters


@functools.lru_cache(maxsize=None)
def loss_schema(fn) -> type[BaseModel]:
    """The hyperparameters of a policy loss as a pydantic model: its keyword parameters, their annotations (or
    their defaults' types) and defaults, read from the function itself (plug-in losses included)."""
    params = inspect.signature(fn).parameters
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):  # a plug-in's annotations that do not resolve: judge by the defaults
        hints = {}
    fields = {}
    for name in hparam_names(fn):
        default = params[name].default
        hint = hints.get(name, Any if default is inspect.Parameter.empty or default is None else type(default))
        fields[name] = (hint, ... if default is inspect.Parameter.empty else default)
    return create_model(f"{fn.__name__}_hparams", __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
                        **fields)


def describe_hparams(name: str) -> str:
    return ", ".join(f"{k} = {v!r}" for k, v in loss_hparams(name).items()) or "none"


def checked_loss_hparams(name: str, hparams: dict) -> dict:
    """``hparams`` with the loss's defaults filled in; names, types and ranges checked now (the loss is evaluated
    once on a one-token batch) rather than at the first update."""
    fn = POLICY_LOSSES[name]
    extra = sorted(set(hparams) - set(hparam_names(fn)))
    if extra:
        close = [m for u in extra for m in difflib.get_close_matches(u, hparam_names(fn), n=1)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"algo.loss_hparams: policy loss {name!r} has no hyperparameter(s) {', '.join(extra)}"
                          f"{hint}; its hyperparameters: {describe_hparams(name)}. A recipe's hyperparameters "
                          "belong to its loss: with another algo.policy_loss, replace them all, e.g. "
                          "'algo.loss_hparams={}'")
    values = validated(loss_schema(fn), hparams, prefix="algo.loss_hparams.").model_dump()
    one = torch.zeros(1, 1)
    try:
        fn(logprobs=one, old_logprobs=one, advantages=torch.ones(1), response_mask=torch.ones(1, 1, dtype=torch.bool),
           **values)
    except (UnknownArgumentError, TypeError, ValueError) as err:
        raise ConfigError(f"algo.loss_hparams: {err}") from None
    return values


# ------------------------------------------------------------------------------------------ --help


def _allowed(key: str, field, named: dict) -> list[str]:
    if key in named:
        return list(named[key])
    hint = field.annotation
    hint = typing.get_args(hint)[0] if typing.get_origin(hint) is list else hint
    return [str(v) for v in typing.get_args(hint)] if typing.get_origin(hint) is typing.Literal else []


def describe_config(model: type[BaseModel] = Config, prefix: str = "", named: dict | None = None) -> list[str]:
    """Every dotted key with its default and, for enumerated keys, the allowed values (``sapo-vl train --help``);
    under ``algo.loss_hparams``, every registered loss's hyperparameters with their defaults."""
    named = _named_keys() if named is None else named
    lines = []
    for name, field in model.model_fields.items():
        key, sub = f"{prefix}{name}", sub_model(model, name)
        if sub and key != "data.mixture":
            lines.extend(describe_config(sub, f"{key}.", named))
            continue
        shown = "<required>" if field.is_required() else repr(field.get_default(call_default_factory=True))
        values = _allowed(key, field, named)
        note = "  (per loss; a key left out takes the loss's default:)" if key == "algo.loss_hparams" else ""
        lines.append(f"  {key} = {shown}" + (f"  ({' | '.join(values)})" if values else note))
        if sub:
            lines.extend(describe_config(sub, f"{key}[].", named))
        if key == "algo.loss_hparams":
            lines.extend(f"      {loss}: {describe_hparams(loss)}" for loss in POLICY_LOSSES)
    return lines


# ------------------------------------------------------------------------------------------ run dirs and resume

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


def _comparable(config: dict) -> dict[str, Any]:
    """A stored config as flat JSON values, its loss hyperparameters completed with the loss's defaults (configs
    saved before the defaults were filled in compare equal to today's)."""
    config = json.loads(json.dumps(config, default=str))
    algo = config.get("algo") or {}
    if algo.get("policy_loss") in POLICY_LOSSES:
        algo["loss_hparams"] = {**loss_hparams(algo["policy_loss"]), **(algo.get("loss_hparams") or {})}
    return _flat(config)


def check_resume(saved: dict | None, cfg: Config, checkpoint: Path) -> None:
    """A resumed run continues the same experiment: every key that changed since ``checkpoint`` was written must
    be safe to change (``SAFE_ON_RESUME``), unless ``resume=force``."""
    if saved is None:  # a checkpoint from before configs were stored in it
        return
    old, new = _comparable(saved), _comparable(cfg.to_dict())
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
