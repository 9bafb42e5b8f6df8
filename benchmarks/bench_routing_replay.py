"""What routing replay costs: the step time of an update with ``algo.routing_replay=rollout`` against the same update
without it, and the rollout's log-prob forward with its recording hooks against a bare forward, on the tiny MoE
(4 layers), interleaved in one process. The target: replay's overhead under 10 %. Also the replayed update with
shared-prefix forwards (the default) against padded ones (``train.prefix_sharing=off``, the only layout replay had
before).

``--whole-step`` measures what issue 22 asks for instead: the median wall time of whole training steps (rollout,
any scoring forward replay forces, reward, update) of the demo recipe, launched as users launch it, with and without
replay, with fp32 and with pure-bf16 weights (``model.dtype``); runs interleaved, ``--repeats`` of each.

    python benchmarks/bench_routing_replay.py [--repeats 15] [--layers 4]
    python benchmarks/bench_routing_replay.py --whole-step [--repeats 2] [--steps 30] [--recipe RECIPE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import sapo_vl  # noqa: F401  (torchvision compat before transformers)
from sapo_vl.cli import main as sapo_vl_main
from sapo_vl.config import AlgoConfig, RolloutConfig, TrainConfig
from sapo_vl.data import build_synthetic_shapes
from sapo_vl.models.load import load_policy
from sapo_vl.models.logprobs import policy_forward
from sapo_vl.models.tiny import TinyConfig, make_tiny_model
from sapo_vl.rollout import HFEngine, PromptFormat, SamplingParams, make_rollout, score_rollout
from sapo_vl.update import PolicyUpdate


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=None, help="default: 15 (2 with --whole-step)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--whole-step", action="store_true", help="whole training steps of the demo, fp32 and bf16")
    p.add_argument("--steps", type=int, default=30, help="--whole-step: steps per run (the first 3 are not timed)")
    p.add_argument("--recipe", type=Path, default=DEMO, help="--whole-step: the recipe (default: the demo, 4-token "
                   "answers; recipes/tiny/colors.yaml has 17-24)")
    args = p.parse_args(argv)
    if args.whole_step:
        return whole_steps(args.repeats or 2, args.steps, args.recipe)
    args.repeats = args.repeats or 15
    torch.manual_seed(0)
    model_dir = make_tiny_model(tempfile.mkdtemp(), TinyConfig(num_hidden_layers=args.layers))
    model, processor = load_policy(model_dir)
    ro = make_rollout(HFEngine(model, processor), PromptFormat(processor), build_synthetic_shapes("train", n=8), 8,
                      SamplingParams(max_new_tokens=16))
    ro.old_logprobs, ro.routing = score_rollout(model, ro, temperature=1.0, micro_batch_size=64)
    ro.advantages = torch.randn(len(ro))
    updates = {name: PolicyUpdate(model, AlgoConfig(routing_replay=name), TrainConfig(lr=0.0), RolloutConfig())
               for name in ("none", "rollout")}
    padded = PolicyUpdate(model, AlgoConfig(routing_replay="rollout"), TrainConfig(lr=0.0, prefix_sharing="off"),
                          RolloutConfig())
    inputs, P = ro.model_inputs()
    cases = {
        "update, no replay": lambda: updates["none"].step(ro),
        "update, routing replay": lambda: updates["rollout"].step(ro),
        "update, replay, padded": lambda: padded.step(ro),
        "log-prob forward, bare": lambda: torch.no_grad()(policy_forward)(model, inputs, P),
        "log-prob forward, recording": lambda: score_rollout(model, ro, temperature=1.0, micro_batch_size=64),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in cases.items():  # interleaved: machine load hits every case alike
            times[name].append(timed(fn))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"tiny MoE, {args.layers} layers, {len(ro)} sequences of {ro.prompt_len + ro.completion_ids.shape[1]} "
          f"tokens, median of {args.repeats} (torch threads {torch.get_num_threads()})")
    for name, value in med.items():
        print(f"  {name:<30} {value * 1000:8.1f} ms")
    replay = med["update, routing replay"] / med["update, no replay"]
    record = med["log-prob forward, recording"] / med["log-prob forward, bare"]
    print(f"routing replay / no replay (update step): {replay:.3f}x  ({'under' if replay < 1.1 else 'OVER'} the "
          "1.10x target)")
    print(f"recording hooks / bare forward (rollout log-probs): {record:.3f}x")
    shared = med["update, replay, padded"] / med["update, routing replay"]
    print(f"replayed update, shared-prefix forwards vs padded: {shared:.2f}x faster")


DEMO = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "demo.yaml"


def step_times(recipe: Path, out: Path, dtype: str, replay: str, steps: int) -> list[tuple[float, float]]:
    """(``time/step``, ``time/logprob``: the scoring forward's share) of each step after the first 3 of one
    ``sapo-vl train`` run of ``recipe``."""
    rc = sapo_vl_main(["train", str(recipe), f"output_dir={out}", f"model.dtype={dtype}",
                       f"algo.routing_replay={replay}", f"train.total_steps={steps}", "log.eval_limit=8",
                       "log.export=false", "log.plot=false", "log.progress=false", "log.save_every=0",
                       "log.backends=[jsonl]", "resume=never"])
    assert rc == 0, f"sapo-vl train exited {rc}"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["time/step"], r.get("time/logprob", 0.0)) for r in rows if "time/step" in r][3:]


def whole_steps(repeats: int, steps: int, recipe: Path = DEMO) -> None:
    cases = [(dtype, replay) for dtype in ("float32", "bfloat16") for replay in ("none", "rollout")]
    times: dict[tuple, list[tuple[float, float]]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for dtype, replay in cases:  # interleaved: machine load hits every case alike
                times[dtype, replay] += step_times(recipe, Path(tmp) / f"{dtype}-{replay}-{r}", dtype, replay, steps)
    print(f"{recipe.name}, whole steps: median of {repeats} runs x {steps - 3} timed steps "
          f"(torch threads {torch.get_num_threads()})")
    for dtype in ("float32", "bfloat16"):
        (base, base_lp), (replay, replay_lp) = ((statistics.median(t[0] for t in times[dtype, mode]),
                                                 statistics.median(t[1] for t in times[dtype, mode]))
                                                for mode in ("none", "rollout"))
        ratio = replay / base
        print(f"  {dtype:<9} no replay {base * 1000:7.1f} ms  replay {replay * 1000:7.1f} ms  {ratio:.3f}x  "
              f"({'under' if ratio < 1.1 else 'OVER'} the 1.10x target); scoring forward "
              f"{base_lp * 1000:.1f} / {replay_lp * 1000:.1f} ms")


if __name__ == "__main__":
    main()
