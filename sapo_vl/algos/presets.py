"""Named algorithms as (policy loss, aggregation, advantage estimator, loss hyperparameters).

An "algorithm" in the papers is a combination of the three registries, not only a loss: Dr.GRPO for example
is the GRPO loss with a different aggregation and advantage. These presets are the papers' choices; a recipe
may start from one and override any field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AlgorithmPreset:
    policy_loss: str
    aggregation: str
    advantage: str
    loss_hparams: dict[str, Any] = field(default_factory=dict)
    note: str = ""


ALGORITHMS: dict[str, AlgorithmPreset] = {
    "sapo": AlgorithmPreset(
        "sapo", "seq-mean-token-mean", "grpo", {"tau_pos": 1.0, "tau_neg": 1.05}, "SAPO, arXiv 2511.20347"
    ),
    "grpo": AlgorithmPreset(
        "grpo",
        "seq-mean-token-mean",
        "grpo",
        {"eps_low": 0.2, "eps_high": 0.2},
        "GRPO, DeepSeekMath arXiv 2402.03300",
    ),
    "dapo": AlgorithmPreset(
        "grpo",
        "token-mean",
        "grpo",
        {"eps_low": 0.2, "eps_high": 0.28},
        "DAPO, arXiv 2503.14476: clip-higher + token-mean; also drop zero-variance groups "
        "(sapo_vl.algos.zero_variance_groups) for dynamic sampling",
    ),
    "dr_grpo": AlgorithmPreset(
        "grpo",
        "seq-mean-token-sum-norm",
        "dr_grpo",
        {"eps_low": 0.2, "eps_high": 0.2},
        "Dr.GRPO, arXiv 2503.20783: aggregate(..., max_len=<generation budget>)",
    ),
    "gspo": AlgorithmPreset(
        "gspo", "seq-mean-token-mean", "grpo", {"eps_low": 3e-4, "eps_high": 4e-4}, "GSPO, arXiv 2507.18071"
    ),
    "cispo": AlgorithmPreset("cispo", "token-mean", "grpo", {"eps_high": 4.0}, "CISPO, MiniMax-M1 arXiv 2506.13585"),
}
