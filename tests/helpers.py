"""Helpers the tests and benchmarks share (benchmarks put this directory on ``sys.path``): reference
implementations and deliberately wrong inputs, which the package itself never needs."""

import torch


def naive_token_logprobs(hidden: torch.Tensor, lm_head: torch.nn.Module, targets: torch.Tensor, *,
                         temperature: float = 1.0):
    """Reference for ``token_logprobs``: the full (N, V) float32 log-softmax at once."""
    logits = lm_head(hidden).float() / temperature  # (N, V)
    logp_all = torch.log_softmax(logits, dim=-1)  # (N, V)
    entropy = -(logp_all.exp() * logp_all).sum(-1)  # (N,)
    return logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1), entropy


_PERTURB = """
def _sapo_perturb(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, (list, tuple)):
        return type(value)(list(value) + [None])
    return "x" if value is None else None


_sapo_original = {ep}


def {ep}(*args, **kwargs):
    return _sapo_perturb(_sapo_original(*args, **kwargs))
"""


def break_solution(solution: str, entry_point: str) -> str:
    """A deliberately wrong variant of a correct solution: ``entry_point``'s return value is perturbed (numbers
    +1, strings + "x", lists grow, booleans flip), to check that a verifier rejects wrong code."""
    return solution + _PERTURB.format(ep=entry_point)
