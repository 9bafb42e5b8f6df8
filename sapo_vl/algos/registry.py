"""The policy-loss registry.

``POLICY_LOSSES[name]`` has the one signature of the policy-loss contract
(``fn(*, logprobs, old_logprobs, advantages, response_mask, **hparams) -> PolicyLossOutput``); plug-ins add theirs
with ``register_policy_loss(name, fn)``. An unknown name raises ``UnknownNameError`` listing the registered names;
unknown hyperparameters raise ``UnknownArgumentError`` (TypeError and ValueError) naming the loss and its valid
hyperparameters.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from sapo_vl.algos.losses import cispo_loss, grpo_loss, gspo_loss, gspo_token_loss, sapo_loss
from sapo_vl.algos.types import PolicyLossOutput, hparam_names
from sapo_vl.registry import Registry

POLICY_LOSSES: Registry = Registry("policy loss", {
    "sapo": sapo_loss,
    "grpo": grpo_loss,
    "gspo": gspo_loss,
    "gspo-token": gspo_token_loss,
    "cispo": cispo_loss,
}, hints={
    "dr_grpo": "Dr.GRPO is not a separate policy loss: it is loss 'grpo' + aggregation "
    "'seq-mean-token-sum-norm' + advantages 'dr_grpo' (algo.preset=dr_grpo).",
    "dapo": "DAPO is not a separate policy loss: it is loss 'grpo' with eps_high=0.28 + aggregation "
    "'token-mean' + dynamic sampling (algo.preset=dapo).",
})
register_policy_loss = POLICY_LOSSES.register


def get_policy_loss(name: str) -> Callable[..., PolicyLossOutput]:
    """``POLICY_LOSSES[name]``: the registered loss function, or the registry's unknown-name error (which points at
    the preset when ``name`` is an algorithm that is not a loss of its own)."""
    return POLICY_LOSSES[name]


def loss_hparams(name: str) -> dict[str, Any]:
    """Hyperparameter names of a loss with their defaults, e.g. ``{"tau_pos": 1.0, "tau_neg": 1.05, ...}``."""
    fn = POLICY_LOSSES[name]
    params = inspect.signature(fn).parameters
    return {k: params[k].default for k in hparam_names(fn)}
