"""Throughput of the math verifier (``sapo_vl.rewards.math.math_equal_many``) against baselines in the same run.

A thousand (pred, gold) checks drawn from a fixed mix of answer styles (identical strings and integers, which the
fast path decides; fractions vs decimals, LaTeX forms, sets, intervals, equations and symbolic forms, which need
math-verify). Printed:

- the share of checks the fast path decides, and checks/s for each stage;
- checks/s of the whole verifier through the worker pool (1 worker, then ``--workers``);
- verdicts per CPU second of the math reward on whole completions (answer extraction from reasoning text, boxes,
  Minerva "Final Answer: ... $X$. I hope it is correct." lines, markdown and answer-block cues, then equivalence)
  and extractions alone, each as a ratio to baseline A's checks per CPU second (medians over rounds; CPU time, not
  wall time, as neighbours on a shared machine make wall-clock rates swing): run the script on two revisions
  (``PYTHONPATH=<checkout> python benchmarks/bench_math_verifier.py``) to compare them, the ratio cancelling the
  machine's speed;
- baseline A: math-verify called in this process on the main thread (its own signal-alarm timeouts): the speed
  ceiling, but unusable from reward threads and unable to stop a hung sympy call;
- baseline B: one fresh Python process per check (the naive hard-timeout design), timed on a few checks;
- the time to reject one pathological answer (deadline + worker replacement).

Run: ``python benchmarks/bench_math_verifier.py [--n 1000] [--workers 2] [--skip-pool-scaling]``
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import time

from sapo_vl.rewards import math as rmath
from sapo_vl.rewards._pool import configure_pool, get_pool


def make_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    makers = [
        lambda a, b: (str(a), str(a)),  # identical integer
        lambda a, b: (str(a), str(b)),  # different integers
        lambda a, b: (f"{a}.0", str(a)),  # decimal vs integer
        lambda a, b: (f"\\frac{{{a}}}{{{b}}}", f"{a / b:.6f}"),  # fraction vs decimal
        lambda a, b: (f"\\dfrac{{{a}}}{{{b}}}", f"{a}/{b}"),  # dfrac vs slash
        lambda a, b: (f"\\{{{b}, {a}\\}}", f"\\{{{a}, {b}\\}}"),  # sets in another order
        lambda a, b: (f"({a}, {a + b}]", f"({a},{a + b}]"),  # interval with spacing
        lambda a, b: (f"x = {a}", str(a)),  # equation vs value
        lambda a, b: (f"{a}\\sqrt{{2}}", f"\\sqrt{{{2 * a * a}}}"),  # symbolic
        lambda a, b: (f"(x+{a})^2", f"x^2+{2 * a}x+{a * a}"),  # polynomial
        lambda a, b: (f"{a}\\%", f"{a / 100}"),  # percentage
        lambda a, b: (f"{a} \\text{{ cm}}", str(a)),  # units
    ]
    weights = [30, 15, 5, 10, 5, 5, 5, 5, 5, 5, 5, 5]  # many RL answers are exact strings or plain integers
    pairs = []
    for _ in range(n):
        maker = rng.choices(makers, weights)[0]
        pairs.append(maker(rng.randint(1, 9999), rng.randint(1, 9999)))
    return pairs


_PROSE = ("We expand the product and collect the terms in $x$; the constant term is $12$ and the slope is $3$, "
          "so after checking the 2 boundary cases the remaining value follows. ")
_STYLES = [  # how models write a final answer, weighted roughly as Qwen3 replies do
    (lambda a: f"{_PROSE * 3}Therefore $\\boxed{{{a}}}$.", 40),
    (lambda a: f"<think>{_PROSE * 4}</think>\n{_PROSE}The answer is $\\boxed{{{a}}}$.", 20),
    (lambda a: f"{_PROSE * 2}Final Answer: The final answer is ${a}$. I hope it is correct.", 15),
    (lambda a: f"{_PROSE * 2}**Answer:** {a}", 10),
    (lambda a: f"<think>{_PROSE * 2}</think><answer>{a}</answer>", 10),
    (lambda a: f"{_PROSE * 2}So the answer is {a}, since both cases agree.", 5),
]


def make_completions(pairs: list[tuple[str, str]], seed: int = 0, styles=_STYLES) -> tuple[list[str], list[str]]:
    """Whole completions wrapping each pair's prediction in one of the answer styles, and the golds."""
    rng = random.Random(seed)
    makers, weights = zip(*styles)
    return [rng.choices(makers, weights)[0](p) for p, _ in pairs], [g for _, g in pairs]


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run_pool(pairs, workers: int) -> tuple[float, list[bool]]:
    configure_pool(workers).warm_up()
    rmath._CACHE.clear()
    return timed(lambda: rmath.math_equal_many(pairs))


def run_inprocess(pairs) -> tuple[float, list[bool]]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]

    def check(pred, gold):
        return verify(parse(f"${gold}$", configs), parse(f"${pred}$", configs))

    check("1", "1")  # warm up like the workers do
    return timed(lambda: [check(p, g) for p, g in pairs])


def run_fresh_process(pairs) -> float:
    code = (
        "import sys, json; from math_verify import parse, verify; p, g = sys.argv[1:3]; "
        "print(verify(parse('$' + g + '$'), parse('$' + p + '$')))"
    )
    start = time.perf_counter()
    for p, g in pairs:
        subprocess.run([sys.executable, "-c", code, p, g], capture_output=True, timeout=60, check=True)
    return time.perf_counter() - start


def cpu_seconds(pids: list[int]) -> float:
    """CPU time used so far by this process and the worker processes ``pids`` (from /proc): on a shared machine
    wall-clock rates swing with the neighbours' load, CPU time much less."""
    total = time.process_time()
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return total


def _verdict_rate(completions: list[str], golds: list[str]) -> tuple[float, int]:
    """Verdicts per CPU second of math_reward, with one worker and a cold cache; and how many were correct."""
    pool = configure_pool(1)
    pool.warm_up()
    pids = [child.pid for child in multiprocessing.active_children()]  # the pool's worker
    rmath._CACHE.clear()
    start = cpu_seconds(pids)
    rewards = rmath.math_reward(completions, answer=golds)
    seconds = cpu_seconds(pids) - start
    configure_pool(1)  # stop the worker: what is timed next gets the CPU to itself
    return len(completions) / seconds, sum(r == 1.0 for r in rewards)


def _cpu_rate(fn, n: int) -> float:
    start = time.process_time()
    fn()
    return n / (time.process_time() - start)


def run_verdicts(n: int, rounds: int) -> None:
    """Per round, on fresh draws: verdicts/s of math_reward (1 worker, cold cache) on the mix of answer styles and
    on boxed answers only (which every revision reads alike), extractions/s, and baseline A's checks/s; printed
    as medians of the ratios to baseline A."""
    ratios: dict[str, list[float]] = {"verdicts (mix)": [], "verdicts (boxed)": [], "extraction": []}
    for r in range(rounds):
        mixed, golds = make_completions(make_pairs(n, 10 + r), 10 + r)
        boxed, boxed_golds = make_completions(make_pairs(n, 20 + r), 20 + r, _STYLES[:1])
        extract = _cpu_rate(lambda: [rmath.extract_answer(c) for c in mixed], n)  # noqa: B023 - called at once
        rate_mixed, correct = _verdict_rate(mixed, golds)
        rate_boxed, _ = _verdict_rate(boxed, boxed_golds)
        base_pairs = make_pairs(n, 30 + r)
        base = _cpu_rate(lambda: run_inprocess(base_pairs), n)  # noqa: B023 - called at once
        ratios["verdicts (mix)"].append(rate_mixed / base)
        ratios["verdicts (boxed)"].append(rate_boxed / base)
        ratios["extraction"].append(extract / base)
        print(f"round {r}, per CPU second: verdicts {rate_mixed:.1f} on the mix ({correct}/{n} correct), "
              f"{rate_boxed:.1f} on boxed answers; extractions {extract:.0f}; baseline A {base:.1f} checks")
    for name, values in ratios.items():
        print(f"speed ratio, {name} / baseline A (median of {rounds}): {statistics.median(values):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fresh", type=int, default=5, help="checks timed for the fresh-process baseline")
    parser.add_argument("--skip-pool-scaling", action="store_true", help="only the verdict and baseline A timings")
    parser.add_argument("--rounds", type=int, default=3, help="verdict / baseline A rounds (the median is kept)")
    args = parser.parse_args()
    # A fresh draw of pairs for each measurement, so no run profits from caches (ours, math-verify's, sympy's)
    # warmed by an earlier one.
    def split(seed):
        pairs = make_pairs(args.n, seed)
        return pairs, [(p, g) for p, g in pairs if rmath.fast_equal(p, g) is None]

    pairs, slow = split(0)
    run_verdicts(args.n, args.rounds)
    if args.skip_pool_scaling:
        return
    t_fast, _ = timed(lambda: [rmath.fast_equal(p, g) for p, g in pairs])
    n_fast = len(pairs) - len(slow)
    print(f"checks: {len(pairs)}  fast path decides {n_fast} ({n_fast / len(pairs):.0%}), "
          f"math-verify needed for {len(slow)}")
    print(f"fast path alone (deciding or passing on): {len(pairs) / max(t_fast, 1e-9):.0f} checks/s")

    t_pool1, out_pool = run_pool(pairs, 1)
    print(f"ours, 1 worker:   {len(pairs) / t_pool1:8.1f} checks/s  ({t_pool1:.2f} s for {len(pairs)})")
    _, slow1 = split(1)
    t_slow1, _ = run_pool(slow1, 1)
    print(f"ours, 1 worker, full-path checks only: {len(slow1) / t_slow1:8.1f} checks/s")
    pairs_n, _ = split(2)
    t_pooln, _ = run_pool(pairs_n, args.workers)
    print(f"ours, {args.workers} workers:  {len(pairs_n) / t_pooln:8.1f} checks/s  ({t_pooln:.2f} s)")

    configure_pool(1)  # stop the workers: the in-process baseline gets the CPU to itself
    pairs_a, slow_a = split(3)
    t_inproc, _ = run_inprocess(pairs_a)
    print(f"baseline A, in-process math-verify on every check (main thread only, no hard bound): "
          f"{len(pairs_a) / t_inproc:.1f} checks/s")
    _, slow_a2 = split(4)
    t_inproc_slow, _ = run_inprocess(slow_a2)
    print(f"baseline A, full-path checks only: {len(slow_a2) / t_inproc_slow:.1f} checks/s")
    t_fresh = run_fresh_process(slow[: args.fresh])
    per_fresh = t_fresh / max(1, min(args.fresh, len(slow)))
    print(f"baseline B, fresh process per check: {1 / per_fresh:.2f} checks/s ({per_fresh:.2f} s per check)")

    _, out_inproc = run_inprocess(pairs)
    agree = sum(a == b for a, b in zip(out_pool, out_inproc))
    print(f"verdicts agree with in-process math-verify on {agree}/{len(pairs)} checks")
    print(f"speed ratio, ours (1 worker) / baseline A: {(len(pairs) / t_pool1) / (len(pairs_a) / t_inproc):.2f}")
    print(f"speed ratio, full path in a worker / in process (IPC overhead): "
          f"{(len(slow1) / t_slow1) / (len(slow_a2) / t_inproc_slow):.2f}")
    print(f"speed ratio, ours (1 worker) / baseline B: {per_fresh * len(pairs) / t_pool1:.0f}")

    configure_pool(1).warm_up()
    t_bomb, verdict = timed(lambda: rmath.math_equal(r"9^{9^{9^{9}}}", "1", timeout_s=1.0))
    t_next, _ = timed(lambda: rmath.math_equal(r"\frac{1}{3}", "0.333333"))
    print(f"pathological answer, 1.0 s deadline: {verdict} after {t_bomb:.2f} s; next check waits "
          f"{t_next:.2f} s for the replacement worker; pool stats {get_pool().stats}")


if __name__ == "__main__":
    main()
