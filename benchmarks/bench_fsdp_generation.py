"""Sharded (FSDP2) generation: each wrap unit's weights gathered once per rollout against gathered at every
decoding step.

FSDP2 all-gathers a unit's weights when it runs and frees them after (``reshard_after_forward``), so a decoding loop
gathers every decoder layer again at every new token. ``HFEngine`` keeps the decoder layers' weights after their
first gather for the whole generation call, as many as fit in the free GPU memory beside the call's KV cache
(``sapo_vl.parallel.kept_units`` / ``gathered``; all of them on CPU).
This launches 2 CPU processes over gloo with ``recipes/accelerate/fsdp2.yaml`` (as tests/test_fsdp.py does), samples
the same rollout both ways, alternating round after round, and prints the median seconds and the ratio, with the
all-gathers each way. On GPUs, NCCL moves a real layer far faster than gloo moves a tiny one, but a real layer is
also far larger: there the GPU run is still to be measured (``benchmarks/gpu_bench.py``).

    python benchmarks/bench_fsdp_generation.py [--rounds 7] [--prompts 4] [--group 8] [--tokens 32] [--layers 4]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def worker(args) -> None:
    from torch.distributed.fsdp._fully_shard import _fsdp_param_group

    import sapo_vl.rollout.generate as generate
    from sapo_vl.config import AlgoConfig, ModelConfig, RolloutConfig, TrainConfig
    from sapo_vl.data import build_synthetic_shapes
    from sapo_vl.models.load import load_policy
    from sapo_vl.parallel import leave_process_group, make_accelerator
    from sapo_vl.rollout import PromptFormat, collate_prompts
    from sapo_vl.update import PolicyUpdate

    train = TrainConfig(mixed_precision="no")
    accelerator = make_accelerator(train)
    model, processor = load_policy(args.model, ModelConfig(dtype="float32"))
    update = PolicyUpdate(model, AlgoConfig(), train, RolloutConfig(), accelerator)
    rank = accelerator.process_index
    records = build_synthetic_shapes("train", n=args.prompts * 2)[rank * args.prompts:(rank + 1) * args.prompts]
    prompts = collate_prompts(PromptFormat(processor), records)
    engine = generate.HFEngine(update.policy, processor, synced=True)
    engine.eos_ids = [-1]  # no early stop: every round decodes all its tokens
    params = generate.SamplingParams(args.tokens, 1.0)
    real_gather, gathers = _fsdp_param_group.foreach_all_gather, []

    def counting(*a, **kw):
        gathers.append(1)
        return real_gather(*a, **kw)

    _fsdp_param_group.foreach_all_gather = counting
    times: dict[str, list[float]] = {"every step": [], "once": []}
    counts: dict[str, int] = {}
    kept = {"every step": lambda policy, *args: [], "once": generate.kept_units}
    for r in range(args.rounds + 1):  # round 0: warm-up
        for name in times:
            generate.kept_units = kept[name]
            torch.manual_seed(r)
            gathers.clear()
            start = time.perf_counter()
            engine.generate(prompts, params, args.group)
            if r:
                times[name].append(time.perf_counter() - start)
            counts[name] = len(gathers)
    if rank == 0:
        print(json.dumps({"median_s": {k: statistics.median(v) for k, v in times.items()}, "all_gathers": counts}))
    leave_process_group(accelerator)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--prompts", type=int, default=4, help="prompts per rank")
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        torch.set_num_threads(1)
        worker(args)
        return 0
    from sapo_vl.models.tiny import TinyConfig, make_tiny_model

    model = make_tiny_model(Path(tempfile.mkdtemp()) / "tiny", TinyConfig(num_hidden_layers=args.layers))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
           str(ROOT / "recipes/accelerate/fsdp2.yaml"), "--num_processes", "2", "--mixed_precision", "no",
           "--main_process_port", str(port), __file__, "--worker", "--model", str(model), "--rounds", str(args.rounds),
           "--prompts", str(args.prompts), "--group", str(args.group), "--tokens", str(args.tokens)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-4000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    med, gathers = result["median_s"], result["all_gathers"]
    print(f"FSDP2 over 2 CPU processes (gloo), {args.layers}-layer tiny MoE, {args.prompts} prompts x G {args.group} "
          f"per rank, {args.tokens} new tokens, {args.rounds} rounds")
    for name in ("every step", "once"):
        print(f"  weights gathered {name:<10} {med[name]:.3f} s per rollout, {gathers[name]} all-gathers")
    print(f"  gathered once: {med['every step'] / med['once']:.2f}x faster generation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
