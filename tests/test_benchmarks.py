"""The benchmark scripts that cannot run here at full size still run their code path (on the tiny models, CPU)."""

import importlib.util
import math
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("model", ["2b", "30b-a3b"])
def test_gpu_bench_measures_rollout_and_training_of_a_dense_and_an_moe_model(model, capsys):
    gpu_bench = _load("gpu_bench")
    gpu_bench.main(["--device", "cpu", "--tiny", "--models", model, "--prompts", "1", "--group", "2",
                    "--new-tokens", "4"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(model) and "rollout" in line and "training" in line and "MFU" in line


def test_gpu_bench_active_parameters_are_the_text_model_dense_and_the_top_k_experts_moe():
    gpu_bench = _load("gpu_bench")
    args = type("Args", (), {"tiny": True, "moe_layers": 2, "device": "cpu"})()
    dense, moe = gpu_bench.build("2b", args), gpu_bench.build("30b-a3b", args)
    text = gpu_bench.params(dense) - gpu_bench.params(dense.model.visual)
    assert gpu_bench.active_params(dense) == text
    experts = sum(p.numel() for n, p in moe.named_parameters() if ".experts." in n)
    cfg = moe.config.text_config
    moe_text = gpu_bench.params(moe) - gpu_bench.params(moe.model.visual)
    assert experts > 0 and gpu_bench.active_params(moe) == pytest.approx(
        moe_text - experts + experts * cfg.num_experts_per_tok / cfg.num_experts)
    assert not math.isnan(gpu_bench.flops_per_token(moe, 64, True))


def test_bench_shared_prefix_prints_generation_and_training_speed_ups(capsys):
    _load("bench_shared_prefix").main(["--rounds", "1", "--group", "2", "--tokens", "2", "--sizes", "64",
                                       "--gradient-checkpointing"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-4].startswith("  64 px") and "one prefill per prompt vs generate" in lines[-3]
    assert "shared vs padded" in lines[-2] and "vs packed" in lines[-1]


@pytest.mark.timeout(300)
def test_bench_fsdp_generation_prints_both_ways_and_the_gather_counts(capsys):
    _load("bench_fsdp_generation").main(["--rounds", "1", "--prompts", "1", "--group", "2", "--tokens", "3",
                                         "--layers", "2"])
    lines = capsys.readouterr().out.strip().splitlines()
    every, once = (int(line.split(",")[1].split()[0]) for line in lines[-3:-1])
    assert "gathered every step" in lines[-3] and "gathered once" in lines[-2] and once < every
    assert lines[-1].startswith("  gathered once:") and lines[-1].endswith("faster generation")


def test_bench_decoding_prints_fused_decoding_against_layer_calls_and_generate(capsys):
    _load("bench_decoding").main(["--rounds", "1", "--prompts", "1", "--group", "2", "--tokens", "3",
                                  "--layers", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line[2:14].strip() for line in lines[-3:]] == ["generate", "layer calls", "fused"], lines[-3:]
    assert all("ms per step" in line and "x faster" in line for line in lines[-3:])


def test_bench_vs_trl_says_whether_each_workload_meets_its_target():
    verdict = _load("bench_vs_trl").verdict
    assert verdict("micro", 0.28, 0.70, [0.3, 0.5, 0.7]) == (
        "target time <= 0.60x TRL's, peak RSS <= 0.75x: met (time target reached in 2 of 3 rounds)")
    assert verdict("micro", 0.28, 0.80, [0.3]).startswith("target time <= 0.60x TRL's, peak RSS <= 0.75x: NOT met")
    assert verdict("decode-bound", 0.53, 0.77, [0.4, 0.6]) == (
        "target throughput >= 1.8x TRL's: met (time target reached in 1 of 2 rounds)")
    assert verdict("image-heavy", 0.57, 0.74, [0.45]).startswith("target throughput >= 1.8x TRL's: NOT met")


def test_bench_optimizer_prints_the_fused_adamw_speed_up(capsys):
    _load("bench_optimizer").main(["--rounds", "1", "--steps", "2", "--layers", "1"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "per-parameter loop" in line and "fused is" in line and line.endswith("x faster")


def test_bench_old_logprobs_prints_both_ways_and_the_speed_up(capsys):
    _load("bench_old_logprobs").main(["--rounds", "1", "--prompts", "1", "--group", "2", "--tokens", "3",
                                      "--layers", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert "pi_old by score" in lines[-3] and "pi_old by sampler" in lines[-2]
    assert "logprob 0.000 s, update" in lines[-2] and lines[-1].startswith("  sampler's log-probs:")


def test_bench_patch_embed_prints_conv3d_against_the_matmul_per_width(capsys):
    _load("bench_patch_embed").main(["--rounds", "1", "--patches", "8", "--widths", "16"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[2] for line in lines[-2:]] == ["forward", "no-grad"]
    assert all("conv3d" in line and line.endswith("x faster") for line in lines[-2:])


def test_bench_log_softmax_prints_both_formulas_for_the_head_and_the_sampler(capsys):
    _load("bench_log_softmax").main(["--rounds", "1", "--rows", "8", "--rows-sampler", "4", "--vocab", "32"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines[-2:]] == ["head", "sampler"]
    assert all("logsumexp" in line and line.endswith("x faster") for line in lines[-2:])


def test_bench_memory_reads_each_phase_peak_and_reports_the_scaling_targets_and_the_plan(tmp_path, capsys):
    """The report of benchmarks/bench_memory.py from its launches' metrics.jsonl (the launches themselves take
    minutes: docs/performance.md#memory has a real run)."""
    import json

    bench = _load("bench_memory")
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": 1, "memory/baseline/host_gib": 0.4, "memory/load/host_gib": 1.0, "memory/update/host_gib": 3.0},
            {"step": 2, "memory/update/host_gib": 3.2, "memory/checkpoint/host_gib": 2.5},
            {"step": 3, "memory/baseline/host_gib": 0.5, "memory/load/host_gib": 2.8, "memory/update/host_gib": 3.1}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    peaks = bench.peaks(run)
    assert peaks == {"baseline": 0.4, "load": 1.0, "update": 3.2, "checkpoint": 2.5, "resume": 2.8}
    two = {"baseline": 0.4, "load": 0.7, "update": 2.0, "checkpoint": 1.4, "resume": 1.6}
    plan = {phase: 1.0 for phase in bench.PLAN_PHASE}
    bench.report({"1": {"measured": peaks, "predicted": plan}, "2": {"measured": two, "predicted": plan}})
    out = capsys.readouterr().out
    assert "load                1.00        0.70   0.70!" in out  # over 0.65: missed
    assert "checkpoint          2.50        1.40   0.56*" in out
    assert "whole run, 2 processes: 0.62x of one process (target <= 0.75) met" in out
    assert "largest plan error" in out and out.rstrip().endswith("scaling targets NOT met")


@pytest.mark.timeout(600)
def test_stability_grid_writes_one_csv_row_per_run_and_regenerates_the_table_from_the_csv_alone(tmp_path, capsys):
    grid = _load("stability_grid")
    doc = tmp_path / "stability.md"
    doc.write_text("# Stability\n<!-- grid table: benchmarks/stability_grid.py --report-only -->\nold\n"
                   "<!-- /grid table -->\nafter\n")
    paths = ["--out", str(tmp_path / "runs"), "--csv", str(tmp_path / "runs.csv"), "--doc", str(doc),
             "--figure", str(tmp_path / "grid.png")]
    small = ["--override", "warmup.steps=1", "warmup.batch_size=4", "data.kwargs.n=16", "data.eval_kwargs.n=4",
             "log.eval_limit=4", "rollout.prompts_per_step=2", "rollout.group_size=4", "reward.num_workers=1"]
    args = ["--arms", "grpo", "--seeds", "0", "--steps", "2", "--stress", "lr1e-3", "mismatch", *paths, *small]
    assert grid.main(args) == 0
    rows = grid.load_csv(tmp_path / "runs.csv")
    assert list(rows[0]) == grid.COLUMNS and sorted(r["stress"] for r in rows) == ["lr1e-3", "mismatch"]
    mismatch = next(r for r in rows if r["stress"] == "mismatch")
    assert float(mismatch["ratio_start_q95"]) > float(mismatch["ratio_start_q05"]) and mismatch["config_hash"]
    assert grid.main(args) == 0 and len(grid.load_csv(tmp_path / "runs.csv")) == 2  # resumed: nothing re-run
    (tmp_path / "runs").rename(tmp_path / "gone")  # the report needs the CSV only
    capsys.readouterr()
    assert grid.main(["--report-only", *paths]) == 0
    text = doc.read_text()
    assert "old" not in text and text.endswith("<!-- /grid table -->\nafter\n")
    assert "| shapes | mismatch | grpo | 1 |" in text and "| shapes | lr1e-3 | grpo | 1 |" in text
    assert (tmp_path / "grid.png").stat().st_size > 0 and "| shapes | mismatch |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown stress 'hot'"):
        grid.main(["--stress", "hot", "--report-only", *paths])


def test_stability_grid_pairs_differences_by_seed_and_compares_each_stress_with_its_on_policy_control():
    grid = _load("stability_grid")

    def rows(stress, arm, accs, seeds=(0, 1, 2)):
        return [{"task": "shapes", "stress": stress, "arm": arm, "seed": str(s), "final_acc": str(a),
                 "collapsed": "False"} for s, a in zip(seeds, accs)]

    a, b = rows("stale2", "sapo", [0.5, 0.7, 0.9]), rows("stale2", "grpo", [0.4, 0.5, 0.9])
    diff, half, test = grid.difference(a, b)  # per-seed differences 0.1, 0.2, 0.0: mean 0.1, sd 0.1
    assert test == "paired" and diff == pytest.approx(0.1) and half == pytest.approx(4.303 * 0.1 / 3 ** 0.5)
    diff, half, test = grid.difference(a, rows("stale2", "grpo", [0.4, 0.5, 0.9], seeds=(0, 1, 3)))
    assert test == "welch" and diff == pytest.approx(0.1)
    sd_a, sd_b = statistics.stdev([0.5, 0.7, 0.9]), statistics.stdev([0.4, 0.5, 0.9])
    assert half == pytest.approx(4.303 * (sd_a ** 2 / 3 + sd_b ** 2 / 3) ** 0.5)  # Welch's standard error, 2 df
    control, lr = rows("stale0", "sapo", [0.4, 0.6, 0.9]), rows("lr1e-3", "sapo", [0.1, 0.1, 0.1])
    effects = grid.stress_effects([*a, *b, *control, *lr])
    assert "| shapes | sapo | stale2 | +0.067 ± " in effects and "(paired) | no |" in effects
    assert "lr1e-3" not in effects and "grpo" not in effects  # other lr; no grpo control
    assert "| shapes | stale2 | sapo - grpo | +0.100 ± 0.248 (paired) | no | 0/3 vs 0/3 |" in grid.comparisons(a + b)
