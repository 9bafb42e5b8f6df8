"""Evaluation harness: declarative benchmark tasks (``eval/*.yaml``), generation through the rollout code or a
samples file, scoring with the training verifiers, Pass@1 / pass@k, lmms-eval style outputs (``sapo-vl eval``).

Light imports only here: ``pass_at_k`` and the metrics are pure Python; the harness is imported on use.
"""

from sapo_vl.evaluation.metrics import majority_vote, mean_pass_at_k, pass_at_k, task_metrics

__all__ = ["majority_vote", "mean_pass_at_k", "pass_at_k", "task_metrics"]
