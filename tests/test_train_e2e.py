"""The training loop end to end on the tiny model: metrics, checkpoints, bit-identical resume, SIGTERM, bad data."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText

from sapo_vl.checkpoint import latest_checkpoint, list_checkpoints
from sapo_vl.config import load_config
from sapo_vl.errors import ConfigError
from sapo_vl.data import RecordError, build_synthetic_shapes, write_jsonl
from sapo_vl.rewards.text import completion_text
from sapo_vl.models.load import load_policy
from sapo_vl.rewards import REWARDS
from sapo_vl.train import run

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recipes" / "tiny" / "demo.yaml"
TINY = ["log.plot=false", "log.progress=false", "log.eval_limit=4", "rollout.group_size=4",
        "rollout.prompts_per_step=2", "rollout.max_new_tokens=3", "warmup.steps=2", "warmup.batch_size=4",
        "data.kwargs.n=24", "reward.num_workers=1"]


def _length_reward(completions, **kwargs):
    """A dense reward (so advantages are non-zero and the SAPO gate is active from step 1); the demo's image
    prompts are chats, so each completion is one assistant message."""
    return [len(completion_text(c)) / 10 for c in completions]


@pytest.fixture
def length_reward(monkeypatch):
    monkeypatch.setitem(REWARDS, "e2e_length", _length_reward)
    return "reward.funcs={vqa: 1.0, e2e_length: 1.0}"


def _config(out_dir, tiny_dir, *overrides):
    return load_config(DEMO, [*TINY, f"output_dir={out_dir}", f"model.path={tiny_dir}", *overrides])


def _rows(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


def _train_rows(out_dir):
    return {r["step"]: r for r in _rows(out_dir) if "loss" in r}


def _weights(path):
    """The weights of a model directory or a training checkpoint, by name."""
    return load_policy(path)[0].state_dict()


def test_two_step_run_logs_metrics_and_writes_a_loadable_checkpoint(tmp_path, tiny_dir, length_reward):
    out = tmp_path / "run"
    cfg = _config(out, tiny_dir, "train.total_steps=2", length_reward)
    summary = run(cfg)
    assert summary["step"] == 2 and 0.0 <= summary["eval_after"]["eval/accuracy"] <= 1.0

    rows = _train_rows(out)
    assert sorted(rows) == [1, 2]
    for row in rows.values():
        assert math.isfinite(row["loss"]) and row["grad_norm"] > 0
        assert {"reward/mean", "reward/vqa", "reward/e2e_length", "accuracy", "time/rollout", "time/logprob",
                "time/reward", "time/update", "time/step", "entropy", "ratio/mean"} <= row.keys()
        assert any(k.startswith("sapo/gate_mean_") for k in row)
        assert {"moe/load_imbalance", "moe/router_entropy", "moe/routing_drift", "moe/aux_loss"} <= row.keys()
    evals = [r for r in _rows(out) if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [0, 2]

    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert load_config(out / "config.yaml") == cfg
    ckpt = out / "checkpoints" / "step-000002"
    assert latest_checkpoint(out) == ckpt
    model = AutoModelForImageTextToText.from_pretrained(str(out / "model"))  # the run's export
    assert type(model).__name__ == "Qwen3VLMoeForConditionalGeneration"
    before, after = _weights(tiny_dir), _weights(ckpt)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in after.items())  # the export is step 2


def test_resume_is_bit_identical_on_cpu(tmp_path, tiny_dir, length_reward, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the training loop picks CPU even on GPU hosts
    common = ["log.save_every=2", "log.keep_last=3", length_reward]
    straight, split = tmp_path / "straight", tmp_path / "split"
    run(_config(straight, tiny_dir, "train.total_steps=4", *common))
    run(_config(split, tiny_dir, "train.total_steps=2", *common))
    summary = run(_config(split, tiny_dir, "train.total_steps=4", "resume=auto", *common))
    assert summary["step"] == 4 and "eval_before" not in summary

    a, b = _train_rows(straight), _train_rows(split)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]  # the resumed run continues the same metrics file
    for step in (3, 4):
        for key in ("loss", "reward/mean", "grad_norm", "entropy", "ratio/mean"):
            assert a[step][key] == b[step][key], (step, key)
    wa = _weights(straight / "checkpoints" / "step-000004")
    wb = _weights(split / "checkpoints" / "step-000004")
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


MIXTURE = ("data.mixture=[{dataset: synthetic_shapes, name: colours, weight: 2, kwargs: {n: 24}}, "
           "{dataset: synthetic_shapes, name: shapes, kwargs: {n: 24, num_shapes: 3, questions: [shape]}}]")


def test_a_mixture_logs_per_source_metrics_and_resumes_exactly(tmp_path, tiny_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    common = [MIXTURE, "data.kwargs={}", "rollout.prompts_per_step=4", "log.save_every=1", "log.keep_last=3"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    run(_config(straight, tiny_dir, "train.total_steps=3", *common))
    run(_config(split, tiny_dir, "train.total_steps=2", *common))
    run(_config(split, tiny_dir, "train.total_steps=3", *common))

    a, b = _train_rows(straight), _train_rows(split)
    for name in ("colours", "shapes"):
        assert any(f"reward/by_source/{name}" in row and f"accuracy/by_source/{name}" in row for row in a.values())
    evals = [r for r in _rows(straight) if "eval/accuracy" in r]
    assert {"eval/accuracy/by_source/colours", "eval/accuracy/by_source/shapes"} <= evals[-1].keys()
    assert evals[-1]["eval/n"] == 8  # log.eval_limit (4) held-out prompts per source
    assert a[3] == {**b[3], "wall_time": a[3]["wall_time"], **{k: a[3][k] for k in a[3] if k.startswith("time/")
                                                              or k.startswith("throughput/")}}
    wa, wb = _weights(straight / "checkpoints" / "step-000003"), _weights(split / "checkpoints" / "step-000003")
    assert all(torch.equal(wa[n], wb[n]) for n in wa)


def test_stale_rollouts_train_late_off_policy_and_resume_exactly(tmp_path, tiny_dir, length_reward, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    common = ["rollout.staleness=1", "train.num_mini_batches=1", "log.save_every=1", "log.keep_last=4",
              "algo.routing_replay=rollout", length_reward]
    straight, split = tmp_path / "straight", tmp_path / "split"
    run(_config(straight, tiny_dir, "train.total_steps=3", *common))
    run(_config(split, tiny_dir, "train.total_steps=2", *common))
    run(_config(split, tiny_dir, "train.total_steps=3", *common))
    rows = {r["step"]: r for r in _rows(straight) if r["step"] > 0 and "reward/mean" in r}
    assert "optimizer_steps" not in rows[1]  # the first step only fills the queue
    assert rows[2]["optimizer_steps"] == rows[3]["optimizer_steps"] == 1.0
    assert rows[3]["ratio/mean"] != 1.0  # one step stale: off-policy from the first mini-batch
    assert rows[3]["moe/routing_drift"] == 0.0 and rows[3]["moe/router_drift"] >= 0.0
    resumed = {r["step"]: r for r in _rows(split) if r["step"] > 0 and "reward/mean" in r}
    assert resumed[3]["loss"] == rows[3]["loss"] and resumed[3]["ratio/mean"] == rows[3]["ratio/mean"]
    wa, wb = _weights(straight / "checkpoints" / "step-000003"), _weights(split / "checkpoints" / "step-000003")
    assert all(torch.equal(wa[n], wb[n]) for n in wa)


def _wait_for(predicate, timeout_s, proc):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


@pytest.mark.timeout(300)
def test_sigterm_saves_a_checkpoint_at_the_step_reached_and_exits_zero(tmp_path, tiny_dir):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "sapo_vl.cli", "train", str(DEMO), *TINY, f"output_dir={out}",
           f"model.path={tiny_dir}", "train.total_steps=10000", "warmup.steps=0", "log.eval_limit=2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "train.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        metrics = out / "metrics.jsonl"
        started = _wait_for(lambda: metrics.is_file() and '"loss"' in metrics.read_text(), 240, proc)
        assert started, (tmp_path / "train.log").read_text()[-3000:]
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    output = (tmp_path / "train.log").read_text()
    assert rc == 0, output[-3000:]
    reached = max(_train_rows(out))  # a signal between steps saves that step, one mid-step drops that step
    assert reached < 10000 and ("SIGTERM received: saved step" in output or "SIGTERM during step" in output)
    assert [p.name for p in list_checkpoints(out)] == [f"step-{reached:06d}"]
    state = torch.load(latest_checkpoint(out) / "trainer_state.pt", weights_only=False)
    assert state["step"] == reached


def _jsonl_dataset(root: Path, bad: bool) -> str:
    """train.jsonl (with one record whose image file is missing when ``bad``) and test.jsonl, images as PNGs."""
    write_jsonl(build_synthetic_shapes("train", n=8), root / "train.jsonl")
    write_jsonl(build_synthetic_shapes("test", n=4), root / "test.jsonl")
    if bad:
        with open(root / "train.jsonl", "a") as fh:
            fh.write(json.dumps({"id": "broken-7", "prompt": "What color is the shape?", "answer": "red",
                                 "reward": "vqa", "images": ["images/does-not-exist.png"]}) + "\n")
    return str(root / "{split}.jsonl")


def test_a_record_with_a_missing_image_raises_naming_it(tmp_path, tiny_dir):
    path = _jsonl_dataset(tmp_path / "data", bad=True)
    cfg = _config(tmp_path / "run", tiny_dir, "data.dataset=jsonl", f"data.kwargs={{path: '{path}'}}",
                  "data.on_error=raise", "train.total_steps=1")
    with pytest.raises(RecordError, match=r"id 'broken-7'.*field 'images\[0\]'"):
        run(cfg)


def test_a_record_with_a_missing_image_is_skipped_and_counted(tmp_path, tiny_dir, caplog):
    path = _jsonl_dataset(tmp_path / "data", bad=True)
    cfg = _config(tmp_path / "run", tiny_dir, "data.dataset=jsonl", f"data.kwargs={{path: '{path}'}}",
                  "data.on_error=skip", "train.total_steps=1", "warmup.steps=0")
    with caplog.at_level("WARNING", logger="sapo_vl.data"):
        summary = run(cfg)
    assert summary["step"] == 1 and sorted(_train_rows(tmp_path / "run")) == [1]
    skipped = [r.getMessage() for r in caplog.records if "skipped 1" in r.getMessage()]
    assert skipped and "kept 8 of 9 records" in skipped[0] and "broken-7" in skipped[0]


def test_a_float32_run_takes_pi_old_from_the_sampler_and_trains_as_if_scored(tmp_path, tiny_dir, length_reward,
                                                                              monkeypatch):
    """rollout.old_logprobs=auto in float32: no forward scores the rollout (two mini-batches, so the update would
    score the second); the metrics and the weights after the step equal those of scoring it, within float32
    rounding."""
    from sapo_vl.rundir import StopFlag
    from sapo_vl.train import setup, train_step
    from sapo_vl.update import PolicyUpdate

    scored, real = [], PolicyUpdate.score
    monkeypatch.setattr(PolicyUpdate, "score", lambda self, batch: scored.append(len(batch)) or real(self, batch))
    weights, results = {}, {}
    for choice in ("auto", "score"):
        cfg = _config(tmp_path / choice, tiny_dir, "train.num_mini_batches=2", "warmup.steps=0", length_reward,
                      f"rollout.old_logprobs={choice}")
        r = setup(cfg, None, StopFlag())
        assert r.update.old_logprobs_source() == ("sampler" if choice == "auto" else "update")
        scored.clear()
        metrics = train_step(r)
        assert (scored == []) == (choice == "auto")
        assert metrics["optimizer_steps"] == 2 and metrics["grad_norm"] > 0
        weights[choice] = {k: v.detach().clone() for k, v in r.hf_model.state_dict().items()}
        results[choice] = [metrics[k] for k in ("loss", "grad_norm", "ratio/mean", "ratio/min", "ratio/max",
                                                "moe/routing_drift", "moe/routing_drift_any_layer")]
        # drift against the experts the sampler or the scoring forward recorded; with "score" the first
        # mini-batch reads its own forward (no recorded experts) and counts with drift 0, as the sampler's does
        assert metrics["moe/routing_drift"] > 0
    assert scored == [4]  # score: the rows outside the first mini-batch
    assert results["auto"] == pytest.approx(results["score"], rel=1e-5)
    for key, w in weights["score"].items():  # Adam's first steps (2e-3 here) amplify rounding where a gradient is ~0
        torch.testing.assert_close(weights["auto"][key], w, atol=1e-5, rtol=0, msg=key)
    before = _weights(tiny_dir)
    assert any(not torch.equal(w, before[k]) for k, w in weights["auto"].items() if k in before)  # it trained


def test_under_replay_every_scoring_and_training_forward_replays_the_samplers_experts_with_no_extra_forward(
        tmp_path, tiny_dir, length_reward, monkeypatch):
    """Routing replay with pi_old scored by the policy (here ``old_logprobs=score``, as bf16 does under ``auto``):
    the update scores only the rows outside its first mini-batch, as without replay, and both that scoring forward
    and the training forwards replay the experts the sampler recorded. The step equals the one that takes pi_old and
    the experts from the sampler, within float32 rounding; the scoring forward follows the experts it is given."""
    import sapo_vl.rollout.generate as generate_module
    import sapo_vl.update as update_module
    from sapo_vl.rundir import StopFlag
    from sapo_vl.train import rollout_phase, setup
    from sapo_vl.update import PolicyUpdate

    scored, real_score = [], PolicyUpdate.score
    monkeypatch.setattr(PolicyUpdate, "score", lambda self, batch: scored.append(len(batch)) or real_score(self, batch))
    replayed = []
    for module in (update_module, generate_module):
        def spy(model, replay=None, real=module.routing):
            replayed.append(replay)
            return real(model, replay)

        monkeypatch.setattr(module, "routing", spy)
    results, weights, rollouts = {}, {}, {}
    for choice in ("score", "sampler"):  # "score" with one epoch, no staleness: the update scores
        cfg = _config(tmp_path / choice, tiny_dir, "train.num_mini_batches=2", "warmup.steps=0", length_reward,
                      "algo.routing_replay=rollout", f"rollout.old_logprobs={choice}")
        r = setup(cfg, None, StopFlag())
        assert r.update.old_logprobs_source() == ("update" if choice == "score" else "sampler")
        assert r.engine.record_routing
        torch.manual_seed(0)
        rollout, _ = rollout_phase(r, r.train_records[:2])
        assert scored == [] and rollout.routing is not None
        assert (rollout.old_logprobs is None) == (choice == "score")
        rollout.advantages = torch.linspace(-1.0, 1.0, len(rollout))
        rollouts[choice], replayed[:] = rollout, []
        metrics = r.update.update(rollout)
        assert scored == ([len(rollout) // 2] if choice == "score" else [])  # the second mini-batch's rows
        assert replayed and all(x is not None for x in replayed)  # every forward replays
        assert metrics["moe/routing_drift"] == 0.0 and metrics["grad_norm"] > 0
        results[choice] = [metrics[k] for k in ("loss", "grad_norm", "ratio/mean", "ratio_start/mean")]
        weights[choice] = {k: v.detach().clone() for k, v in r.hf_model.state_dict().items()}
        scored.clear()
    assert results["score"][3] == 1.0  # pi_old of the first mini-batch is its own forward
    assert results["score"] == pytest.approx(results["sampler"], rel=1e-4, abs=1e-5)
    for key, w in weights["sampler"].items():
        torch.testing.assert_close(weights["score"][key], w, atol=1e-5, rtol=0, msg=key)

    # the scoring forward runs the experts it is handed, and reports them; with none it refuses
    rollout = rollouts["sampler"]
    mask = torch.cat([rollout.prompt_mask, rollout.response_mask], dim=1).bool()
    experts = r.hf_model.config.text_config.num_experts
    moved = replace(rollout, routing=(rollout.routing.long() + 1) % experts)
    own, _ = r.update.score(rollout)
    other, recorded = r.update.score(moved)
    assert torch.equal(recorded.long()[mask], moved.routing[mask])
    assert (other - own).abs().max() > 1e-3
    with pytest.raises(ValueError, match="no recorded experts to replay"):
        r.update.score(replace(rollout, routing=None))


def test_pi_old_comes_from_the_sampler_where_it_equals_a_forwards_and_a_forward_would_score():
    from types import SimpleNamespace

    from sapo_vl.config import Config
    from sapo_vl.update import PolicyUpdate

    def source(choice="auto", dtype=torch.float32, mp="no", replay="none", mini_batches=2, epochs=1, staleness=0,
               sharded=False, sampler="float32"):
        cfg = Config()
        cfg.rollout.old_logprobs, cfg.rollout.staleness, cfg.algo.routing_replay = choice, staleness, replay
        cfg.rollout.sampler_dtype = sampler
        cfg.train.num_mini_batches, cfg.train.epochs = mini_batches, epochs
        update = SimpleNamespace(algo=cfg.algo, train=cfg.train, rollout=cfg.rollout, sharded=sharded,
                                 model=SimpleNamespace(dtype=dtype), accelerator=SimpleNamespace(mixed_precision=mp))
        return PolicyUpdate.old_logprobs_source(update)

    assert source() == source(mini_batches=1, epochs=2) == "sampler"
    assert source(replay="rollout") == source(replay="rollout", mini_batches=1) == "sampler"
    # bf16 under replay: the update scores, as without replay (replaying the sampler's experts)
    assert source(dtype=torch.bfloat16, replay="rollout") == source("score", replay="rollout") == "update"
    assert source(dtype=torch.bfloat16, replay="rollout", epochs=2) == "score"
    # one mini-batch, one epoch: the update's own forward gives pi_old with no pass at all (and ratio 1 exactly)
    assert source(mini_batches=1) == "update"
    # bf16: the update scores what it trains on the policy that made the rollout, a forward scores the rest
    assert source(dtype=torch.bfloat16) == source(mp="bf16") == source("score") == "update"
    assert source("score", epochs=2) == source("score", staleness=1) == "score"
    assert source("score", sharded=True) == "score" and source("score", sharded=True, mini_batches=1) == "update"
    assert source("sampler", dtype=torch.bfloat16) == "sampler"
    # a bf16 sampler's log-probs are not a float32 forward's: auto scores; the mismatch stress names "sampler"
    assert source(sampler="bfloat16") == "update" and source(sampler="bfloat16", staleness=1) == "score"
    assert source("sampler", sampler="bfloat16") == "sampler"


_ONE_STEP = """
import hashlib, sys, tempfile
import torch
import sapo_vl
from sapo_vl.config import load_config
from sapo_vl.rundir import StopFlag
from sapo_vl.train import setup, train_step
torch.set_num_threads(2)
r = setup(load_config(sys.argv[1], [f"output_dir={tempfile.mkdtemp()}", f"model.path={sys.argv[2]}",
                                    "log.backends=[]", "log.progress=false", "log.plot=false"]), None, StopFlag())
train_step(r)
print(hashlib.md5(torch.cat([p.detach().flatten() for p in r.hf_model.parameters()]).numpy().tobytes()).hexdigest())
"""


@pytest.mark.timeout(300)
def test_a_training_step_gives_the_same_weights_to_the_bit_in_two_processes(tiny_dir):
    """The demo's warm-up and first step (2 threads, shared-prefix forwards, two mini-batches), each in a fresh
    process: the gather of a prompt's KV cache to its rows once accumulated its gradient in an order that varied
    between processes, so identical runs drifted apart and the demo's outcome varied run to run."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT)}
    hashes = [subprocess.run([sys.executable, "-c", _ONE_STEP, str(DEMO), str(tiny_dir)], capture_output=True,
                             text=True, env=env, cwd=ROOT, timeout=280, check=True).stdout.split()[-1]
              for _ in range(2)]
    assert hashes[0] == hashes[1]


def test_the_colors_recipe_trains_on_17_token_list_answers_with_partial_credit(tmp_path, tiny_dir):
    out = tmp_path / "colors"
    cfg = load_config(ROOT / "recipes" / "tiny" / "colors.yaml", [*TINY[:5], "warmup.steps=2", "warmup.batch_size=4",
                      "data.kwargs.n=8", "reward.num_workers=1", "train.total_steps=1", f"output_dir={out}",
                      f"model.path={tiny_dir}"])
    assert cfg.rollout.max_new_tokens == 24 and cfg.reward.accuracy == "ordered_words"
    assert run(cfg)["step"] == 1
    row = _train_rows(out)[1]
    assert {"reward/ordered_words_partial", "reward/ordered_words", "accuracy"} <= row.keys()
    assert math.isfinite(row["loss"])


def test_rollout_correction_keeps_the_samplers_log_probs_and_logs_its_weights(tmp_path, tiny_dir):
    """In float32 the sampler's log-probs equal a forward's to rounding: every weight is 1 to rounding."""
    out = tmp_path / "corrected"
    run(_config(out, tiny_dir, "train.total_steps=1", "rollout.old_logprobs=score",
                "algo.rollout_correction.mode=token_mask"))
    row = _train_rows(out)[1]
    assert row["rollout_correction/weight_mean"] == pytest.approx(1.0, abs=1e-4)
    assert row["rollout_correction/over_threshold_frac"] == 0.0


def test_a_bf16_sampler_gives_pi_old_that_differs_from_the_float32_policy_and_the_run_trains(tmp_path, tiny_dir,
                                                                                             length_reward):
    """rollout.sampler_dtype=bfloat16 with old_logprobs=sampler: the first mini-batch's ratio (the float32 policy
    that sampled, before any step, over the bf16 copy's log-probs) is the mismatch, measured and non-zero; in float32
    it is 1 to rounding. Under rollout_correction the scored pi_old is weighed against the bf16 sampler's."""
    rows = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / dtype
        run(_config(out, tiny_dir, "train.total_steps=2", "train.num_mini_batches=2", "warmup.steps=0",
                    length_reward, "rollout.old_logprobs=sampler", f"rollout.sampler_dtype={dtype}"))
        rows[dtype] = _train_rows(out)
    fp32, bf16 = rows["float32"][1], rows["bfloat16"][1]
    assert fp32["ratio_start/q05"] == pytest.approx(1.0, abs=1e-4) == fp32["ratio_start/q95"]
    assert bf16["ratio_start/q95"] - bf16["ratio_start/q05"] > 1e-3 and bf16["ratio_start/outside_frac"] < 0.5
    assert all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in rows["bfloat16"].values())
    out = tmp_path / "corrected"
    run(_config(out, tiny_dir, "train.total_steps=1", "warmup.steps=0", length_reward, "rollout.old_logprobs=score",
                "rollout.sampler_dtype=bfloat16", "algo.rollout_correction.mode=token_truncate"))
    row = _train_rows(out)[1]
    assert row["rollout_correction/ratio_q95"] - row["rollout_correction/ratio_q05"] > 1e-3
    with pytest.raises(ConfigError, match="rollout.sampler_dtype: expected 'float32' or 'bfloat16'"):
        _config(tmp_path, tiny_dir, "rollout.sampler_dtype=fp16")
