"""What computing log-probs by one ``log_softmax`` buys: the chunked head's no-grad forward with entropy
(``sapo_vl.models.logprobs.token_logprobs``) against the same chunk through ``logits - logsumexp(logits)`` and a
separate softmax for the entropy (its formula before 2026-12-02, written out here as the baseline), and the sampler's
per-step log-prob of the drawn token both ways, alternating in one process.

    python benchmarks/bench_log_softmax.py [--rounds 15] [--rows 1024] [--rows-sampler 32] [--vocab 1024]

Defaults: the decode-bound workload of bench_vs_trl.py (a mini-batch of 16 x 64 completion tokens, 32 sampled rows,
the tiny model's 1k vocabulary, hidden size 64).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def _logsumexp_head(hidden, weight, targets):
    """The head's log-probs and entropy as computed before: logits - logsumexp, entropy from a second softmax."""
    logits = F.linear(hidden, weight)  # (N, V)
    logz = torch.logsumexp(logits, dim=-1)
    probs = torch.softmax(logits, dim=-1)
    return logits.gather(-1, targets[:, None])[:, 0] - logz, logz - (probs * logits).sum(-1)


def main(argv: list[str] | None = None) -> int:
    from sapo_vl.models.logprobs import token_logprobs

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--rows", type=int, default=1024, help="completion tokens through the head")
    p.add_argument("--rows-sampler", type=int, default=32, help="sequences sampled per decoding step")
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=64)
    args = p.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(args.hidden, args.vocab, bias=False)
    hidden = torch.randn(args.rows, args.hidden, generator=g)
    targets = torch.randint(0, args.vocab, (args.rows,), generator=g)
    logits = torch.randn(args.rows_sampler, args.vocab, generator=g) * 3
    tokens = torch.randint(0, args.vocab, (args.rows_sampler, 1), generator=g)
    pairs = {
        f"head forward with entropy, {args.rows} x {args.vocab}": (
            lambda: _logsumexp_head(hidden, head.weight, targets),
            lambda: token_logprobs(hidden, head, targets, with_entropy=True)),
        f"sampler log-prob, {args.rows_sampler} x {args.vocab}": (
            lambda: logits.gather(1, tokens)[:, 0] - logits.logsumexp(-1),
            lambda: torch.log_softmax(logits, -1).gather(1, tokens)[:, 0]),
    }
    with torch.no_grad():
        (old_lp, old_ent), (new_lp, new_ent) = (f() for f in pairs[next(iter(pairs))])
        assert torch.allclose(old_lp, new_lp, atol=1e-5) and torch.allclose(old_ent, new_ent, atol=1e-5)
        print(f"{torch.get_num_threads()} threads, {args.rounds} rounds (median)")
        for name, (old, new) in pairs.items():
            times = {"logsumexp": [], "log_softmax": []}
            for r in range(args.rounds + 1):  # round 0 warms up
                for key, f in (("logsumexp", old), ("log_softmax", new)):
                    start = time.perf_counter()
                    f()
                    if r:
                        times[key].append(time.perf_counter() - start)
            slow, fast = (statistics.median(t) for t in times.values())
            print(f"  {name:42s} logsumexp {slow * 1e3:7.3f} ms  log_softmax {fast * 1e3:7.3f} ms  "
                  f"log_softmax is {slow / fast:.2f}x faster")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(2)  # here, not in main(): the test suite calls main() in its own process
    raise SystemExit(main())
