"""Tests for sapo_vl.plots: reading metrics.jsonl, smoothing, panel choice, PNG output and the plot CLI."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from sapo_vl.commands.plot import main as plot_main
from sapo_vl.plots import ema, load_metrics, plot_compare, plot_run, select_panels

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_metrics(run_dir, records):
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "metrics.jsonl", "w") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")
    return run_dir


def synthetic_run(run_dir, n=24, final=0.8):
    """A short run with the training loop's key families: reward, accuracy, loss, SAPO gates, MoE, timings."""
    rng = np.random.default_rng(0)
    records = []
    for s in range(1, n + 1):
        p = final * s / n
        records.append({
            "step": s, "epoch": 0, "wall_time": 1000.0 + s,
            "reward/mean": p + 0.05 * rng.standard_normal(), "reward/std": 0.4, "accuracy": p,
            "loss": 0.01 * rng.standard_normal(), "kl": None if s == 5 else 0.0,
            "response_length/mean": 100 - s, "truncated_frac": 0.1,
            "entropy": 1.0 - 0.01 * s, "sapo/gate_mean_pos": 0.97, "sapo/gate_mean_neg": 0.95,
            "grad_norm": 0.5, "lr": 1e-6, "moe/load_imbalance": 1.3, "moe/router_entropy": 1.9,
            "time/rollout": 2.0, "time/update": 1.0, "time/step": 3.1,
        })
        if s % 8 == 0:
            records.append({"step": s, "eval/accuracy": p})
    return write_metrics(run_dir, records)


def png_size(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        return image.size


# -------------------------------------------------------------------------------------------------- reading
def test_load_metrics_merges_lines_of_one_step_and_reads_null_as_nan(tmp_path):
    write_metrics(tmp_path, [
        {"step": 2, "loss": 0.5}, {"step": 1, "loss": None, "reward/mean": 0.1},
        {"step": 2, "eval/accuracy": 0.3}, {"step": 3, "loss": 0.25, "note": "text"},
    ])
    data = load_metrics(tmp_path / "metrics.jsonl")
    steps, loss = data["loss"]
    assert steps.tolist() == [1, 2, 3]
    assert math.isnan(loss[0]) and loss[1:].tolist() == [0.5, 0.25]
    assert data["eval/accuracy"][0].tolist() == [2]
    assert "note" not in data and "step" not in data


def test_load_metrics_skips_a_half_written_line_with_a_warning(tmp_path):
    write_metrics(tmp_path, [{"step": 1, "loss": 0.5}])
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 2, "lo')
    with pytest.warns(UserWarning, match=r"metrics.jsonl:2: skipping"):
        data = load_metrics(tmp_path / "metrics.jsonl")
    assert data["loss"][0].tolist() == [1]


def test_load_metrics_on_an_empty_file_raises(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_metrics(tmp_path / "metrics.jsonl")


# ------------------------------------------------------------------------------------------------ smoothing
def test_ema_is_debiased_and_skips_nan():
    # w = 0.5: s1 = 0.5 * 1 = 0.5 -> 0.5 / (1 - 0.5) = 1; s2 = 0.25 + 1.5 = 1.75 -> 1.75 / 0.75 = 7/3
    out = ema(np.array([1.0, np.nan, 3.0]), 0.5)
    assert out[0] == pytest.approx(1.0) and out[1] == pytest.approx(1.0) and out[2] == pytest.approx(7 / 3)


def test_ema_of_a_constant_is_the_constant():
    assert np.allclose(ema(np.full(50, 0.7), 0.95), 0.7)


def test_ema_rejects_a_weight_of_one():
    with pytest.raises(ValueError, match="smoothing weight"):
        ema(np.ones(3), 1.0)


# --------------------------------------------------------------------------------------------------- panels
def test_select_panels_skips_panels_without_data():
    titles = [panel.title for panel, _ in select_panels(["reward/mean", "accuracy", "step", "epoch"])]
    assert titles == ["Reward (mean over rollouts)", "Accuracy"]


def test_select_panels_groups_unknown_keys_by_prefix():
    chosen = select_panels(["reward/mean", "rollout/kv_cache_mb", "rollout/batch", "custom"])
    assert [(panel.title, keys) for panel, keys in chosen[1:]] == [
        ("other", ["custom"]),
        ("rollout", ["rollout/batch", "rollout/kv_cache_mb"]),
    ]


def test_select_panels_puts_right_axis_keys_with_their_panel():
    (panel, keys), = select_panels(["response_length/mean", "truncated_frac"])
    assert panel.name == "response_length" and keys == ["response_length/mean", "truncated_frac"]


# -------------------------------------------------------------------------------------------------- figures
@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """The synthetic run and what plot_run wrote for it (rendered once: a full figure takes about a second)."""
    run = synthetic_run(tmp_path_factory.mktemp("full") / "run")
    return run, plot_run(run, dpi=30)


def test_plot_run_writes_a_summary_png_under_run_dir_plots(full_run):
    run, paths = full_run
    assert paths == [run / "plots" / "summary.png"]
    png_size(paths[0])


def test_plot_run_figure_has_only_the_panels_with_data(tmp_path, full_run):
    small = write_metrics(tmp_path / "small", [{"step": s, "reward/mean": s / 10} for s in range(1, 6)])
    (small_png,) = plot_run(small, dpi=30)
    (full_png,) = full_run[1]
    # one panel -> one row of one panel; the full run fills several rows of three
    assert png_size(small_png)[0] < png_size(full_png)[0] and png_size(small_png)[1] < png_size(full_png)[1]


def test_plot_run_with_panels_writes_one_png_per_panel(tmp_path):
    records = [{"step": s, "reward/mean": s / 10, "entropy": 1.0} for s in (1, 2)]
    run = write_metrics(tmp_path / "run", records)
    paths = plot_run(run, tmp_path / "out", panels=True, dpi=30)
    assert [p.name for p in paths] == ["summary.png", "reward.png", "entropy.png"]
    assert all(p.parent == tmp_path / "out" for p in paths)


def test_plot_compare_writes_one_png_for_two_runs(tmp_path, full_run):
    other = synthetic_run(tmp_path / "grpo", final=0.5)
    out = plot_compare([full_run[0], other], tmp_path / "cmp" / "compare.png", dpi=30)
    png_size(out)


def test_plot_compare_needs_two_runs(tmp_path):
    with pytest.raises(ValueError, match="at least two runs"):
        plot_compare([synthetic_run(tmp_path / "a")], tmp_path / "c.png")


# ------------------------------------------------------------------------------------------------------ CLI
def test_cli_errors_clearly_when_metrics_file_is_missing(tmp_path, capsys):
    assert plot_main([str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert "no metrics file" in err and str(tmp_path / "nowhere" / "metrics.jsonl") in err


def test_cli_errors_clearly_when_metrics_file_is_empty(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text("\n")
    assert plot_main([str(tmp_path)]) == 1
    assert "is empty" in capsys.readouterr().err


def test_cli_prints_the_written_paths(tmp_path, capsys):
    run = write_metrics(tmp_path / "run", [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3)])
    assert plot_main([str(run), "--out", str(tmp_path / "figs")]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "figs" / "summary.png")]


def test_cli_with_two_runs_writes_compare_png(tmp_path, capsys):
    a = write_metrics(tmp_path / "a", [{"step": s, "reward/mean": s / 10} for s in (1, 2, 3)])
    b = write_metrics(tmp_path / "b", [{"step": s, "reward/mean": s / 20} for s in (1, 2, 3)])
    assert plot_main([str(a), str(b), "--out", str(tmp_path), "--labels", "SAPO", "GRPO"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "compare.png")]
    png_size(tmp_path / "compare.png")


def test_clipping_losses_metrics_get_their_own_panel():
    from sapo_vl.plots import select_panels

    chosen = select_panels(["reward/mean", "clip_frac", "clip_frac_low", "clip_frac_high", "dual_clip_frac"])
    titles = {panel.title: keys for panel, keys in chosen}
    assert titles["Clipped tokens (grpo / gspo / cispo)"] == ["clip_frac", "clip_frac_low", "clip_frac_high",
                                                              "dual_clip_frac"]
    assert "other" not in titles


def test_mixture_metrics_get_a_by_source_panel_and_stay_out_of_reward_components():
    keys = ["reward/mean", "reward/vqa", "reward/by_source/a", "accuracy/by_source/a", "eval/accuracy/by_source/a"]
    chosen = {panel.name: found for panel, found in select_panels(keys)}
    assert chosen["by_source"] == ["accuracy/by_source/a", "reward/by_source/a"]
    assert chosen["reward_components"] == ["reward/vqa"] and chosen["eval"] == ["eval/accuracy/by_source/a"]
