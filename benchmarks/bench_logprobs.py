"""Chunked completion log-probs (sapo_vl.models.logprobs.token_logprobs) against the naive full log-softmax.

Both run forward + backward on the same (N, H) hidden states and an lm_head of Qwen3-VL's vocabulary size, in the
same process. Prints time per call and peak resident memory growth (each variant in a fresh subprocess, so the
numbers do not mix), and the ratios chunked / naive.

    python benchmarks/bench_logprobs.py [--tokens 2048] [--hidden 256] [--vocab 151936] [--chunks 64,256,1024]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"  # tests/helpers.py holds the naive reference

_CHILD = r"""
import json, resource, sys, time, torch
sys.path.insert(0, sys.argv[7])
from helpers import naive_token_logprobs
from sapo_vl.models.logprobs import token_logprobs
mode, N, H, V, chunk, reps = sys.argv[1], *map(int, sys.argv[2:7])
torch.manual_seed(0)
head = torch.nn.Linear(H, V, bias=False)
hidden = torch.randn(N, H, requires_grad=True)
targets = torch.randint(0, V, (N,))
def once():
    if mode == "naive":
        lp, _ = naive_token_logprobs(hidden, head, targets)
    else:
        lp, _ = token_logprobs(hidden, head, targets, chunk_size=chunk, with_entropy=True)
    lp.sum().backward()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
once()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
t = time.perf_counter()
for _ in range(reps):
    once()
print(json.dumps({"s": (time.perf_counter() - t) / reps, "peak_mb": peak / 1024}))
"""


def run(mode: str, args, chunk: int) -> dict:
    cmd = [sys.executable, "-c", _CHILD, mode, str(args.tokens), str(args.hidden), str(args.vocab), str(chunk),
           str(args.reps), str(TESTS)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--chunks", default="64,256,1024", help="chunk sizes to compare against naive")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    naive = run("naive", args, 0)
    print(f"N={args.tokens} H={args.hidden} V={args.vocab}")
    print(f"{'naive':<16}{naive['s'] * 1e3:9.1f} ms  peak +{naive['peak_mb']:8.1f} MB")
    for chunk in map(int, args.chunks.split(",")):
        c = run("chunked", args, chunk)
        print(f"{f'chunk {chunk}':<16}{c['s'] * 1e3:9.1f} ms  peak +{c['peak_mb']:8.1f} MB   ratio to naive: time "
              f"{c['s'] / naive['s']:.2f}x, peak memory {c['peak_mb'] / max(naive['peak_mb'], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
