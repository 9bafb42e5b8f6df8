"""Policy losses: SAPO, GRPO (PPO clip, DAPO clip-higher, dual clip), GSPO / GSPO-token, CISPO.

One signature for all (the ``POLICY_LOSSES`` contract, README.md "Extend")::

    fn(*, logprobs, old_logprobs, advantages, response_mask, **hparams) -> PolicyLossOutput

* ``logprobs``, ``old_logprobs``, ``response_mask``: (B, T); ``advantages``: (B,) or (B, T).
* ``per_token_loss`` is (B, T), exactly 0 outside the mask; reduce it with ``sapo_vl.algos.aggregate``.
  The losses are to be *minimised* (loss = -surrogate objective).
* Positions outside ``response_mask`` may hold NaN/inf: they are replaced with ``torch.where`` on the inputs
  before any arithmetic (``types.prepare_inputs``), so they reach neither the loss nor any gradient.
* Computation is in float32 at least (bf16/fp16 inputs are upcast; float64 stays float64), so the SAPO gate
  and the PPO ratios are never evaluated in bf16. ``per_token_loss`` is returned in that dtype.
* Unknown hyperparameters raise ``UnknownArgumentError`` (a TypeError and a ValueError) naming the loss and
  its valid hyperparameters.

Log-ratio clamp (``log_ratio_clip=20.0``): ``log r = clamp(logp - old_logp, -c, c)`` before ``exp``, so
``r`` stays within [2e-9, 4.9e8] and never overflows float32. The loss is *exactly* a function of the clamped
log-ratio and its gradient is the true autograd gradient of that function: a token whose |log-ratio| exceeds
``c`` gets zero gradient through the ratio (``torch.clamp`` passes none outside its range). Such a token
is so far off-policy (ratio beyond e^20) that no estimator here would trust it: SAPO's gate is already ~0
there, PPO clipping zeroes it for the advantage sign it clips, and a straight-through gradient would instead
inject a weight of up to 4.9e8 * A. CISPO is unaffected: its gradient flows through ``logp`` directly and the
(detached) ratio only scales it.

Dr.GRPO is not a separate loss: it is the ``"grpo"`` loss with aggregation ``"seq-mean-token-sum-norm"`` and
``"dr_grpo"`` advantages (see ``sapo_vl.algos.presets.ALGORITHMS["dr_grpo"]``), so it is not registered here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from sapo_vl.algos.types import (
    LossInputs,
    PolicyLossOutput,
    check_number,
    common_metrics,
    hparam_names,
    masked_frac,
    masked_max,
    masked_mean,
    masked_min,
    prepare_inputs,
    reject_unknown,
    to_floats,
)


def _setup(
    name: str,
    fn: Callable,
    unknown: dict,
    logprobs,
    old_logprobs,
    advantages,
    response_mask,
    log_ratio_clip: float,
) -> LossInputs:
    reject_unknown(f"policy loss {name!r}", unknown, hparam_names(fn))
    clip = check_number(name, "log_ratio_clip", log_ratio_clip, low=0.0, low_inclusive=False)
    return prepare_inputs(f"policy loss {name!r}", logprobs, old_logprobs, advantages, response_mask, clip)


def _finish(inp: LossInputs, loss: Tensor, extra: dict[str, Tensor]) -> PolicyLossOutput:
    per_token = torch.where(inp.mask, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))  # (B, T)
    with torch.no_grad():
        metrics = common_metrics(inp)
        metrics.update(extra)
        floats = to_floats(metrics)
    return PolicyLossOutput(per_token_loss=per_token, metrics=floats)


# ---------------------------------------------------------------------------------------------------- SAPO
def sapo_loss(
    *,
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    tau_pos: float = 1.0,
    tau_neg: float = 1.05,
    log_ratio_clip: float = 20.0,
    **unknown,
) -> PolicyLossOutput:
    """Soft Adaptive Policy Optimization (Gao et al., arXiv 2511.20347, Sec. 3: the SAPO objective with the
    soft gate f_{i,t} and, for the gradient, the weight w_{i,t}; equation numbers not checked in the PDF).

    Per token, with r = pi_theta / pi_old and the soft gate of the paper
        f(r) = (4 / tau) * sigmoid(tau * (r - 1)),   tau = tau_pos if A > 0, tau_neg if A < 0,
    the objective is f(r) * A, so ``per_token_loss = -f(r) * A``. Its gradient (the paper's gradient weight)
        d loss / d logp = -A * w(r) * r,   w(r) = 4 sigmoid(x)(1 - sigmoid(x)) = sech^2(tau (r - 1) / 2),
    with w(1) = 1: on-policy SAPO is the plain policy gradient, and the weight decays smoothly off-policy.
    The gradient is the autograd derivative of f (not a detached gate times grad log p).
    A == 0 contributes nothing; it uses tau_pos. The paper's defaults are tau_pos=1.0, tau_neg=1.05.

    Metrics (over response tokens with A > 0 / A < 0; omitted when a sign has no token):
    ``sapo/gate_mean_{pos,neg}``, ``sapo/gate_min_{pos,neg}``, ``sapo/gate_frac_below_half_{pos,neg}``
    (fraction of tokens whose weight w < 0.5), plus the common ratio/approx_kl metrics.
    """
    inp = _setup("sapo", sapo_loss, unknown, logprobs, old_logprobs, advantages, response_mask, log_ratio_clip)
    t_pos = check_number("sapo", "tau_pos", tau_pos, low=0.0, low_inclusive=False)
    t_neg = check_number("sapo", "tau_neg", tau_neg, low=0.0, low_inclusive=False)
    adv = inp.advantages  # (B, T)
    tau = torch.where(adv < 0, torch.full_like(adv, t_neg), torch.full_like(adv, t_pos))  # (B, T)
    x = tau * (inp.ratio - 1.0)  # (B, T)
    gate = torch.sigmoid(x) * (4.0 / tau)  # (B, T) f(r)
    loss = -gate * adv  # (B, T)
    extra: dict[str, Tensor] = {}
    with torch.no_grad():
        s = torch.sigmoid(x.detach())
        weight = 4.0 * s * (1.0 - s)  # (B, T) sech^2(tau (r - 1) / 2)
        for suffix, sel in (("pos", inp.mask & (adv > 0)), ("neg", inp.mask & (adv < 0))):
            if bool(sel.any()):
                extra[f"sapo/gate_mean_{suffix}"] = masked_mean(weight, sel)
                extra[f"sapo/gate_min_{suffix}"] = masked_min(weight, sel)
                extra[f"sapo/gate_frac_below_half_{suffix}"] = masked_frac(weight < 0.5, sel)
    return _finish(inp, loss, extra)


# ---------------------------------------------------------------------------------------------------- GRPO
def _clip_hparams(name: str, eps_low: float, eps_high: float) -> tuple[float, float]:
    lo = check_number(name, "eps_low", eps_low, low=0.0, high=1.0)
    hi = check_number(name, "eps_high", eps_high, low=0.0)
    return lo, hi


def grpo_loss(
    *,
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    clip_ratio_c: float | None = None,
    log_ratio_clip: float = 20.0,
    **unknown,
) -> PolicyLossOutput:
    """PPO clipped surrogate as used by GRPO (Shao et al., DeepSeekMath, arXiv 2402.03300, Eq. 3).

        loss = max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))
    Separate ``eps_low`` / ``eps_high`` give DAPO's clip-higher (Yu et al., arXiv 2503.14476: 0.2 / 0.28).
    Optional dual clip ``clip_ratio_c`` (Ye et al., arXiv 1912.09729; typically 3.0, must be > 1):
    for A < 0 the loss is additionally capped, ``loss = min(loss, -A * c)``, bounding the update of tokens
    with a huge ratio and negative advantage.

    Metrics: ``clip_frac`` (fraction of response tokens where a clipped branch is the active one, i.e. gets
    zero gradient) = ``clip_frac_high`` (A > 0 and r > 1 + eps_high) + ``clip_frac_low`` (A < 0 and
    r < 1 - eps_low); ``dual_clip_frac`` (A < 0 and the dual-clip cap is active; 0 when disabled).
    """
    inp = _setup("grpo", grpo_loss, unknown, logprobs, old_logprobs, advantages, response_mask, log_ratio_clip)
    lo, hi = _clip_hparams("grpo", eps_low, eps_high)
    c = (
        None
        if clip_ratio_c is None
        else check_number("grpo", "clip_ratio_c", clip_ratio_c, low=1.0, low_inclusive=False)
    )
    adv, ratio = inp.advantages, inp.ratio  # (B, T), (B, T)
    loss = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1.0 - lo, 1.0 + hi))  # (B, T)
    dual_active = torch.zeros_like(inp.mask)
    if c is not None:
        cap = -adv * c  # (B, T)
        dual_active = (adv < 0) & (loss > cap)
        loss = torch.where(adv < 0, torch.minimum(loss, cap), loss)  # (B, T)
    extra: dict[str, Tensor] = {}
    if bool(inp.mask.any()):
        with torch.no_grad():
            r = ratio.detach()
            high = (adv > 0) & (r > 1.0 + hi)
            low = (adv < 0) & (r < 1.0 - lo)
            extra = {
                "clip_frac": masked_frac(high | low, inp.mask),
                "clip_frac_low": masked_frac(low, inp.mask),
                "clip_frac_high": masked_frac(high, inp.mask),
                "dual_clip_frac": masked_frac(dual_active, inp.mask),
            }
    return _finish(inp, loss, extra)


# ---------------------------------------------------------------------------------------------------- GSPO
def _sequence_log_ratio(inp: LossInputs, clip: float) -> Tensor:
    """log s_i = clamp(mean over response tokens of (logp - old_logp), -clip, clip). Shape (B, 1).

    The mean is taken on the unclamped per-token differences (the paper's definition) and the clamp is applied
    to the mean, right before exp. A sequence with no response token gets log s = 0 (it has no loss anyway).
    """
    n = inp.mask.sum(-1, keepdim=True).clamp(min=1)  # (B, 1)
    return torch.clamp(inp.raw_log_ratio.sum(-1, keepdim=True) / n, -clip, clip)  # (B, 1)


def _gspo_common(inp: LossInputs, seq_ratio: Tensor, lo: float, hi: float, log_seq_ratio: Tensor) -> PolicyLossOutput:
    """Clipped sequence-ratio surrogate shared by gspo and gspo-token; metrics ``gspo/seq_ratio_*`` are over
    non-empty sequences."""
    adv = inp.advantages  # (B, T)
    loss = torch.maximum(-adv * seq_ratio, -adv * torch.clamp(seq_ratio, 1.0 - lo, 1.0 + hi))  # (B, T)
    extra: dict[str, Tensor] = {}
    if bool(inp.mask.any()):
        with torch.no_grad():
            s = torch.exp(log_seq_ratio.detach()).expand_as(adv)  # (B, T)
            high = (adv > 0) & (s > 1.0 + hi)
            low = (adv < 0) & (s < 1.0 - lo)
            nonempty = inp.mask.any(-1)  # (B,)
            s_seq = s[:, 0]
            extra = {
                "clip_frac": masked_frac(high | low, inp.mask),
                "clip_frac_low": masked_frac(low, inp.mask),
                "clip_frac_high": masked_frac(high, inp.mask),
                "gspo/seq_ratio_mean": masked_mean(s_seq, nonempty),
                "gspo/seq_ratio_max": masked_max(s_seq, nonempty),
                "gspo/seq_ratio_min": masked_min(s_seq, nonempty),
            }
    return _finish(inp, loss, extra)


def gspo_loss(
    *,
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    eps_low: float = 3e-4,
    eps_high: float = 4e-4,
    log_ratio_clip: float = 20.0,
    **unknown,
) -> PolicyLossOutput:
    """Group Sequence Policy Optimization (Zheng et al., arXiv 2507.18071, Sec. 4.1: GSPO objective).

    Sequence-level ratio s_i = exp(mean_t (logp - old_logp)) (the paper's length-normalised s_i(theta)),
    clipped like PPO:
        per-token loss = max(-A s_i, -A clip(s_i, 1 - eps_low, 1 + eps_high)),
    broadcast over the sequence's response tokens, so aggregation ``"seq-mean-token-mean"`` gives exactly the
    paper's objective. Defaults eps_low=3e-4, eps_high=4e-4 are the paper's. The gradient of s_i
    spreads evenly over the sequence's tokens. Advantages are per sequence; with (B, T) advantages each
    token's advantage multiplies the sequence ratio (use ``"gspo-token"`` for token-level advantages).
    """
    inp = _setup("gspo", gspo_loss, unknown, logprobs, old_logprobs, advantages, response_mask, log_ratio_clip)
    lo, hi = _clip_hparams("gspo", eps_low, eps_high)
    log_s = _sequence_log_ratio(inp, float(log_ratio_clip))  # (B, 1)
    return _gspo_common(inp, torch.exp(log_s), lo, hi, log_s)


def gspo_token_loss(
    *,
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    eps_low: float = 3e-4,
    eps_high: float = 4e-4,
    log_ratio_clip: float = 20.0,
    **unknown,
) -> PolicyLossOutput:
    """GSPO-token (Zheng et al., arXiv 2507.18071, Sec. 4.3): s_i,t = sg[s_i] * pi(y_t) / sg[pi(y_t)].

    Numerically s_i,t == s_i, but the gradient of token t flows only through its own log-prob, so per-token
    advantages A_i,t are supported. With per-sequence advantages, value and gradient equal ``"gspo"``
    under ``"seq-mean-token-mean"``. Computed in log space as ``logp - sg[logp] + sg[log s_i]`` (the addition
    last keeps the value exact), then clamped to +-log_ratio_clip before exp.
    """
    inp = _setup(
        "gspo-token",
        gspo_token_loss,
        unknown,
        logprobs,
        old_logprobs,
        advantages,
        response_mask,
        log_ratio_clip,
    )
    lo, hi = _clip_hparams("gspo-token", eps_low, eps_high)
    clip = float(log_ratio_clip)
    log_s = _sequence_log_ratio(inp, clip)  # (B, 1)
    log_sit = inp.logprobs - inp.logprobs.detach() + log_s.detach()  # (B, T)
    seq_ratio = torch.exp(torch.clamp(log_sit, -clip, clip))  # (B, T)
    return _gspo_common(inp, seq_ratio, lo, hi, log_s)


# --------------------------------------------------------------------------------------------------- CISPO
def cispo_loss(
    *,
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    eps_high: float = 4.0,
    eps_low: float | None = None,
    log_ratio_clip: float = 20.0,
    **unknown,
) -> PolicyLossOutput:
    """CISPO (MiniMax-M1, arXiv 2506.13585, Eqs. 4-5): clip the importance-sampling *weight*, not the update.

        per-token loss = -sg[clip(r, 1 - eps_low, 1 + eps_high)] * A * log pi_theta
    so d loss / d logp = -sg[clipped r] * A: every token keeps a gradient, only its weight is bounded.
    The paper imposes no lower bound (``eps_low=None`` = no lower clip) and tunes only the upper one without
    publishing a value; the default ``eps_high=4.0`` (weight capped at 5) follows the ScaleRL recipe
    (arXiv 2510.13786) as used by common implementations. The paper normalises by the total token count:
    use aggregation ``"token-mean"``. The loss *value* is not a surrogate objective (it is -w A log p);
    only its gradient is meaningful.

    Metrics: ``clip_frac`` = ``clip_frac_high`` (r > 1 + eps_high) + ``clip_frac_low`` (r < 1 - eps_low;
    0 without a lower clip).
    """
    inp = _setup("cispo", cispo_loss, unknown, logprobs, old_logprobs, advantages, response_mask, log_ratio_clip)
    hi = check_number("cispo", "eps_high", eps_high, low=0.0)
    lo = None if eps_low is None else check_number("cispo", "eps_low", eps_low, low=0.0, high=1.0)
    r = inp.ratio.detach()  # (B, T)
    weight = torch.clamp(r, min=None if lo is None else 1.0 - lo, max=1.0 + hi)  # (B, T)
    loss = -weight * inp.advantages * inp.logprobs  # (B, T)
    extra: dict[str, Tensor] = {}
    if bool(inp.mask.any()):
        with torch.no_grad():
            high = r > 1.0 + hi
            low = torch.zeros_like(high) if lo is None else r < 1.0 - lo
            extra = {
                "clip_frac": masked_frac(high | low, inp.mask),
                "clip_frac_low": masked_frac(low, inp.mask),
                "clip_frac_high": masked_frac(high, inp.mask),
            }
    return _finish(inp, loss, extra)
