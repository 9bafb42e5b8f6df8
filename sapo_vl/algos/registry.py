"""The policy-loss registry and the ``policy_loss`` convenience.

``POLICY_LOSSES[name]`` has the one signature of DESIGN.md section 2. ``policy_loss(name, **kwargs)``:

* with the four tensors (``logprobs``, ``old_logprobs``, ``advantages``, ``response_mask``) it computes the
  loss and returns a ``PolicyLossOutput``;
* with hyperparameters only it validates them now (config time) and returns the configured loss, a callable
  taking the four tensors as keywords.

Unknown names raise ValueError listing the valid names; unknown hyperparameters raise ``UnknownArgumentError``
(TypeError and ValueError) naming the loss and its valid hyperparameters.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from sapo_vl.algos.losses import cispo_loss, grpo_loss, gspo_loss, gspo_token_loss, sapo_loss
from sapo_vl.algos.types import PolicyLossOutput, check_number, hparam_names, reject_unknown

POLICY_LOSSES: dict[str, Callable[..., PolicyLossOutput]] = {
    "sapo": sapo_loss,
    "grpo": grpo_loss,
    "gspo": gspo_loss,
    "gspo-token": gspo_token_loss,
    "cispo": cispo_loss,
}

# The aggregation each loss's paper uses (pass it to ``aggregate``).
DEFAULT_AGGREGATION: dict[str, str] = {
    "sapo": "seq-mean-token-mean",
    "grpo": "seq-mean-token-mean",
    "gspo": "seq-mean-token-mean",
    "gspo-token": "seq-mean-token-mean",
    "cispo": "token-mean",
}

TENSOR_ARGS: tuple[str, ...] = ("logprobs", "old_logprobs", "advantages", "response_mask")

_NOT_A_LOSS = {
    "dr_grpo": "Dr.GRPO is not a separate policy loss: it is loss 'grpo' + aggregation "
    "'seq-mean-token-sum-norm' (with max_len) + advantages 'dr_grpo'; see "
    "sapo_vl.algos.ALGORITHMS['dr_grpo'].",
    "dapo": "DAPO is not a separate policy loss: it is loss 'grpo' with eps_high=0.28 + aggregation "
    "'token-mean' + dynamic sampling; see sapo_vl.algos.ALGORITHMS['dapo'].",
}


def get_policy_loss(name: str) -> Callable[..., PolicyLossOutput]:
    """The registered loss function, or ValueError listing the valid names."""
    if name in POLICY_LOSSES:
        return POLICY_LOSSES[name]
    hint = _NOT_A_LOSS.get(name, "")
    raise ValueError(f"unknown policy loss {name!r}; valid names are {sorted(POLICY_LOSSES)}. {hint}".rstrip())


def loss_hparams(name: str) -> dict[str, Any]:
    """Hyperparameter names of a loss with their defaults, e.g. ``{"tau_pos": 1.0, "tau_neg": 1.05, ...}``."""
    fn = get_policy_loss(name)
    params = inspect.signature(fn).parameters
    return {k: params[k].default for k in hparam_names(fn)}


def _validate_hparams(name: str, hparams: dict[str, Any]) -> None:
    """Fail at config time: unknown names, and values that are not numbers (None allowed where default)."""
    defaults = loss_hparams(name)
    reject_unknown(f"policy loss {name!r}", {k: v for k, v in hparams.items() if k not in defaults}, list(defaults))
    for key, value in hparams.items():
        if not (value is None and defaults[key] is None):
            check_number(name, key, value)


def policy_loss(name: str, **kwargs: Any) -> PolicyLossOutput | Callable[..., PolicyLossOutput]:
    """Compute loss ``name`` (all four tensors given) or return it configured (hyperparameters only)."""
    fn = get_policy_loss(name)
    given = [k for k in TENSOR_ARGS if k in kwargs]
    if len(given) == len(TENSOR_ARGS):
        return fn(**kwargs)
    if given:
        missing = [k for k in TENSOR_ARGS if k not in kwargs]
        raise TypeError(
            f"policy_loss({name!r}): got {given} but not {missing}; pass all four tensors to "
            f"compute the loss, or none to get the configured loss function"
        )
    _validate_hparams(name, kwargs)
    configured = functools.partial(fn, **kwargs)
    functools.update_wrapper(configured, fn)
    return configured
