"""Pure tensor functions for RL fine-tuning: policy losses, aggregation, advantages, KL estimators.

* ``POLICY_LOSSES`` / ``register_policy_loss``: sapo, grpo, gspo, gspo-token, cispo (see ``losses``)
* ``aggregate`` / ``AGGREGATION_MODES`` / ``global_normalizers``: (B, T) loss -> scalar, micro-batch exact
* ``ADVANTAGES`` / ``register_advantage``: grpo, dr_grpo, rloo; ``zero_variance_groups`` for DAPO dynamic sampling
* ``kl_penalty`` / ``KL_ESTIMATORS``: k1 / k2 / k3 to a reference policy
* ``rollout_correction_weights``: importance weights pi_old / pi_sampler, truncated or masked (TIS / MIS)
* ``ALGORITHMS``: the papers' loss + aggregation + advantage combinations (e.g. dr_grpo, dapo)
"""

from sapo_vl.algos.advantages import (
    ADVANTAGES,
    dr_grpo_advantages,
    grpo_advantages,
    register_advantage,
    rloo_advantages,
    zero_variance_groups,
)
from sapo_vl.algos.aggregate import AGGREGATION_MODES, aggregate, global_normalizers
from sapo_vl.algos.correction import CORRECTION_MODES, rollout_correction_weights
from sapo_vl.algos.kl import KL_ESTIMATORS, kl_penalty
from sapo_vl.algos.losses import cispo_loss, grpo_loss, gspo_loss, gspo_token_loss, sapo_loss
from sapo_vl.algos.presets import ALGORITHMS, AlgorithmPreset
from sapo_vl.algos.registry import (
    POLICY_LOSSES,
    get_policy_loss,
    loss_hparams,
    register_policy_loss,
)
from sapo_vl.algos.types import PolicyLossOutput, UnknownArgumentError

__all__ = [
    "ADVANTAGES",
    "AGGREGATION_MODES",
    "ALGORITHMS",
    "CORRECTION_MODES",
    "KL_ESTIMATORS",
    "POLICY_LOSSES",
    "AlgorithmPreset",
    "PolicyLossOutput",
    "UnknownArgumentError",
    "aggregate",
    "cispo_loss",
    "dr_grpo_advantages",
    "get_policy_loss",
    "global_normalizers",
    "grpo_advantages",
    "grpo_loss",
    "gspo_loss",
    "gspo_token_loss",
    "kl_penalty",
    "loss_hparams",
    "register_advantage",
    "register_policy_loss",
    "rloo_advantages",
    "rollout_correction_weights",
    "sapo_loss",
    "zero_variance_groups",
]
