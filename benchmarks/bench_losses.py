"""Cost of the safe policy losses against a bare baseline, measured in the same run.

For each registered loss: forward + ``aggregate`` + backward on a (B, T) batch with ragged response lengths,
including input validation, NaN-safe masking and the metrics (one device sync). The baseline is a bare SAPO
formula with ``loss * mask`` and no checks or metrics, i.e. what the safety costs. Prints ms per call and the
ratio to the baseline.

    python benchmarks/bench_losses.py [--batch 64] [--length 2048] [--device cuda] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import time

import torch

from sapo_vl.algos import ALGORITHMS, POLICY_LOSSES, aggregate


def _batch(b: int, t: int, device: str, dtype: torch.dtype):
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).to(device)  # (B, T)
    logp = (-torch.rand(b, t, generator=g) * 3).to(device=device, dtype=dtype)
    old = (logp.float() + torch.randn(b, t, generator=g).to(device) * 0.05).to(dtype)
    adv = torch.randn(b, generator=g).to(device=device, dtype=dtype)
    return logp, old, adv, mask


def _baseline(logp, old, adv, mask):
    ratio = torch.exp(logp.float() - old.float())  # (B, T)
    loss = -(4.0 * torch.sigmoid(ratio - 1.0)) * adv.float()[:, None] * mask  # (B, T)
    return (loss.sum(-1) / mask.sum(-1).clamp(min=1)).mean()


def _time(fn, device: str, repeats: int) -> float:
    for _ in range(3):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--length", type=int, default=2048)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    logp, old, adv, mask = _batch(args.batch, args.length, args.device, getattr(torch, args.dtype))

    def run_baseline():
        x = logp.detach().requires_grad_(True)
        _baseline(x, old, adv, mask).backward()

    def make(name):
        def run():
            x = logp.detach().requires_grad_(True)
            out = POLICY_LOSSES[name](logprobs=x, old_logprobs=old, advantages=adv, response_mask=mask)
            mode = ALGORITHMS[name].aggregation if name in ALGORITHMS else "seq-mean-token-mean"  # the paper's
            aggregate(out.per_token_loss, mask, mode).backward()

        return run

    base = _time(run_baseline, args.device, args.repeats)
    print(f"device={args.device} dtype={args.dtype} B={args.batch} T={args.length}")
    print(f"{'baseline (bare sapo, loss*mask)':34s} {base:8.2f} ms   1.00x")
    for name in POLICY_LOSSES:
        ms = _time(make(name), args.device, args.repeats)
        print(f"{name:34s} {ms:8.2f} ms   {ms / base:.2f}x")


if __name__ == "__main__":
    main()
