"""Named algorithms as (policy loss, aggregation, advantage estimator, loss hyperparameters).

An "algorithm" in the papers is a combination of the three registries, not only a loss: Dr.GRPO for example
is the GRPO loss with a different aggregation and advantage. These presets are the papers' choices; a recipe
names one with ``algo.preset`` and may override any field (``sapo_vl.config`` applies it). A plug-in adds its own
with ``ALGORITHMS.register(name, AlgorithmPreset(...))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sapo_vl.registry import Registry


@dataclass(frozen=True)
class AlgorithmPreset:
    policy_loss: str
    aggregation: str
    advantage: str
    loss_hparams: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    filter_zero_variance: bool = False  # DAPO's dynamic sampling: drop groups whose rewards are all equal

    def algo_keys(self) -> dict[str, Any]:
        """The ``algo.*`` config keys this preset sets."""
        return {"policy_loss": self.policy_loss, "aggregation": self.aggregation, "advantage": self.advantage,
                "loss_hparams": dict(self.loss_hparams), "filter_zero_variance": self.filter_zero_variance}


ALGORITHMS = Registry("algorithm preset", {
    "sapo": AlgorithmPreset("sapo", "seq-mean-token-mean", "grpo", {},
                            "SAPO, arXiv 2511.20347 (the loss's own defaults)"),
    "grpo": AlgorithmPreset("grpo", "seq-mean-token-mean", "grpo", {"eps_low": 0.2, "eps_high": 0.2},
                            "GRPO, DeepSeekMath arXiv 2402.03300"),
    "dapo": AlgorithmPreset("grpo", "token-mean", "grpo", {"eps_low": 0.2, "eps_high": 0.28},
                            "DAPO, arXiv 2503.14476: clip-higher + token-mean + dynamic sampling (zero-variance "
                            "groups dropped)", filter_zero_variance=True),
    "dr_grpo": AlgorithmPreset("grpo", "seq-mean-token-sum-norm", "dr_grpo", {"eps_low": 0.2, "eps_high": 0.2},
                               "Dr.GRPO, arXiv 2503.20783: sums normalised by the generation budget "
                               "(rollout.max_new_tokens)"),
    "gspo": AlgorithmPreset("gspo", "seq-mean-token-mean", "grpo", {"eps_low": 3e-4, "eps_high": 4e-4},
                            "GSPO, arXiv 2507.18071"),
    "cispo": AlgorithmPreset("cispo", "token-mean", "grpo", {"eps_high": 4.0}, "CISPO, MiniMax-M1 arXiv 2506.13585"),
}, of=AlgorithmPreset)
