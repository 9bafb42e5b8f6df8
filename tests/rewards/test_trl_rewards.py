"""TRL's own reward functions (trl, pinned in the dev extra) run unchanged through sapo_vl's reward step and give
TRL's values; one trains the demo from a recipe; and sapo_vl's verifiers pass TRL's reward step in GRPOTrainer."""

import inspect
import json
import sys
from pathlib import Path

import pytest
import yaml

trl_rewards = pytest.importorskip("trl.rewards")

from sapo_vl.cli import main  # noqa: E402
from sapo_vl.rewards import REWARDS  # noqa: E402
from sapo_vl.rewards.pool import RewardPool  # noqa: E402

DEMO = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "demo.yaml"
FACTORY_ARGS = {  # small arguments for TRL's reward factories
    "get_cosine_scaled_reward": {"max_len": 8},
    "get_repetition_penalty_reward": {"ngram_size": 2},
    "get_soft_overlong_punishment": {"max_completion_len": 6, "soft_punish_cache": 3},
}
TEXTS = [r"<think>easy</think> so \boxed{\frac{1}{3}}", r"<think>hmm</think> \boxed{2}",
         r"no reasoning, \boxed{\frac{1}{3}}", "<think>x</think> words words words"]
SOLUTIONS = [r"\frac{1}{3}", r"\frac{1}{3}", r"\frac{1}{3}", "not math"]  # the last gold does not parse: None
IDS = [[1, 2, 3], [4] * 7, [5, 6, 5, 6, 5], [7] * 9]
PROMPTS = {"plain": "What is a third?", "conversational": [{"role": "user", "content": "What is a third?"}]}


def trl_functions() -> dict:
    """Every public reward function of trl.rewards, factories built with small arguments."""
    out = {}
    for name in sorted(n for n in dir(trl_rewards) if not n.startswith("_")):
        obj = getattr(trl_rewards, name)
        if not inspect.isfunction(obj):
            continue
        if name.startswith("get_"):
            assert name in FACTORY_ARGS, f"a new TRL reward factory {name}: give it arguments in FACTORY_ARGS"
            obj = obj(**FACTORY_ARGS[name])
        out[name] = obj
    return out


def as_trl_calls(fn, prompt):
    """``fn`` called the way GRPOTrainer._calculate_rewards calls it on these inputs: (values or the exception,
    what it logged with log_extra)."""
    conversational = isinstance(prompt, list)
    completions = [[{"role": "assistant", "content": t}] if conversational else t for t in TEXTS]
    extra = {}
    try:
        values = fn(prompts=[prompt] * len(TEXTS), completions=completions, completion_ids=IDS, solution=SOLUTIONS,
                    trainer_state=None, log_extra=lambda c, v: extra.setdefault(c, []).extend(v),
                    log_metric=lambda n, v: None)
    except Exception as exc:  # TRL fails the same way: e.g. a message-only function handed strings
        return type(exc), {}
    return values, extra


def test_trl_exports_the_reward_functions_this_test_covers():
    assert set(trl_functions()) >= {"accuracy_reward", "think_format_reward", "reasoning_accuracy_reward"}
    assert set(FACTORY_ARGS) <= set(dir(trl_rewards))


@pytest.mark.parametrize("kind", ["conversational", "plain"])
@pytest.mark.parametrize("name", sorted(trl_functions()))
def test_every_trl_reward_function_gives_trls_values_through_the_reward_step(name, kind, monkeypatch):
    fn = trl_functions()[name]
    monkeypatch.setitem(REWARDS, name, fn)
    expected, expected_extra = as_trl_calls(fn, PROMPTS[kind])
    records = [{"id": str(i), "prompt": PROMPTS[kind], "images": [], "solution": s} for i, s in enumerate(SOLUTIONS)]
    pool = RewardPool({name: 1.0}, chunk_size=len(TEXTS))
    if isinstance(expected, type):
        with pytest.raises(expected):
            pool.score(TEXTS, records, completion_ids=IDS)
        return
    _, comps = pool.score(TEXTS, records, completion_ids=IDS)
    assert comps[name] == pytest.approx(expected) and pool.last_extra == expected_extra
    if kind == "conversational":  # every function of trl.rewards applies to message completions
        assert any(v is not None for v in comps[name])


PLUGIN = '''
from trl.rewards import get_soft_overlong_punishment, think_format_reward
from sapo_vl.rewards import register_reward

register_reward("overlong", get_soft_overlong_punishment(max_completion_len=3, soft_punish_cache=2))
register_reward("think", think_format_reward)  # reads message completions: the demo's image prompts are chats


@register_reward("shout")
def shout(completions, log_metric, log_extra, **kwargs):
    texts = [c[0]["content"] for c in completions]
    log_metric("chars", sum(map(len, texts)) / len(texts))
    log_extra("upper", [t.upper() for t in texts])
    return [0.0] * len(completions)
'''


def test_a_prompt_with_images_is_conversational_for_reward_functions(monkeypatch):
    """Every VLM prompt is a chat, as in TRL: a string prompt with images reaches a reward as one user turn with
    an image part where the image goes, and its completions as assistant messages."""
    seen = {}

    def spy(prompts, completions, **kwargs):
        seen.update(prompts=prompts, completions=completions)
        return [0.0] * len(completions)

    records = [{"id": "0", "prompt": "Count <image> shapes.", "images": ["img"]},
               {"id": "1", "prompt": "No image here.", "images": []}]
    monkeypatch.setitem(REWARDS, "spy", spy)
    RewardPool({"spy": 1.0}).score(["<think>a</think>b", "c"], records)
    assert seen["prompts"] == [[{"role": "user", "content": [{"type": "text", "text": "Count "}, {"type": "image"},
                                                             {"type": "text", "text": " shapes."}]}],
                               "No image here."]
    assert seen["completions"] == [[{"role": "assistant", "content": "<think>a</think>b"}], "c"]
    assert trl_rewards.think_format_reward(seen["completions"][:1]) == [1.0]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_trl_function_registered_by_a_plugin_trains_the_demo(tmp_path, tiny_dir, capsys):
    (tmp_path / "trl_plugin.py").write_text(PLUGIN)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({**yaml.safe_load(DEMO.read_text()), "imports": ["trl_plugin"],
                                      "reward": {"funcs": {"vqa": 1.0, "overlong": 0.5, "think": 0.0,
                                                                  "shout": 0.0}}}))
    out = tmp_path / "run"
    args = ["train", str(recipe), f"output_dir={out}", f"model.path={tiny_dir}", "warmup.steps=0", "log.plot=false",
            "log.progress=false", "log.eval_limit=2", "rollout.group_size=2", "rollout.prompts_per_step=2",
            "rollout.max_new_tokens=3", "train.num_mini_batches=1", "reward.num_workers=1", "log.save_every=2",
            "log.export=false", "data.kwargs={n: 8}"]
    try:
        assert main([*args, "train.total_steps=3"]) == 0
        samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
        assert [s["step"] for s in samples] == [1] * 4 + [2] * 4 + [3] * 4
        assert all(s["upper"] == s["completion"].upper() for s in samples)
        (out / "checkpoints" / "step-000003").rename(out / "step-3")  # resume from step 2: step 3 is redone
        (out / "checkpoints" / "latest").unlink(missing_ok=True)
        assert main([*args, "train.total_steps=3"]) == 0
        assert "at step 2" in capsys.readouterr().out  # resumed: samples.jsonl loses the step redone
    finally:
        REWARDS.pop("overlong", None)
        REWARDS.pop("shout", None)
        REWARDS.pop("think", None)
        sys.modules.pop("trl_plugin", None)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "reward/overlong" in row]
    assert [row["step"] for row in steps] == [1, 2, 3]
    assert all(-1.0 <= row["reward/overlong"] <= 0.0 and "reward/shout/chars" in row for row in steps)
    assert all(row["reward/think"] in (0.0, 1.0) for row in steps)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [1] * 4 + [2] * 4 + [3] * 4  # step 3 once


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sapo_vl_verifiers_pass_trls_reward_step(tiny_dir, tmp_path):
    """GRPOTrainer is built offline on CPU on the tiny model; its reward step (``_calculate_rewards``, the method its
    training step calls, with TRL's argument set and output checks) scores a tiny batch with our verifiers."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    chat = [{"role": "user", "content": "Answer."}]
    check = "def check(candidate):\n    assert candidate(1, 2) == 3\n"
    rows = [{"prompt": chat, "answer": "2", "tests": None, "entry_point": None},
            {"prompt": chat, "answer": "red", "tests": None, "entry_point": None},
            {"prompt": chat, "answer": None, "tests": check, "entry_point": "add"}]
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), use_cpu=True, per_device_train_batch_size=3,
                      num_generations=3, max_completion_length=4, report_to=[], bf16=False)
    names = ["math", "vqa", "code"]
    trainer = GRPOTrainer(model=str(tiny_dir), reward_funcs=[REWARDS[n] for n in names], args=args,
                          train_dataset=Dataset.from_list(rows))
    texts = [r"so \boxed{2}", "red", "```python\ndef add(a, b):\n    return a + b\n```"]
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    got = trainer._calculate_rewards(rows, [r["prompt"] for r in rows], completions, [[1]] * 3)
    assert trainer.reward_func_names == names
    for j, name in enumerate(names):  # TRL turns None (not applicable) into NaN
        ours = REWARDS[name](completions, **{k: [r[k] for r in rows] for k in ("answer", "tests", "entry_point")})
        assert [None if v != v else v for v in got[:, j].tolist()] == ours
    assert got[0, 0] == 1.0 and got[1, 1] == 1.0 and got[2, 2] == 1.0
