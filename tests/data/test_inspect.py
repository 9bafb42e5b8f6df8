"""sapo-vl data inspect: every built-in dataset, every eval fixture, recipes and files; skips, tokens, routing."""

import json
from pathlib import Path

import pytest
import yaml

from sapo_vl.cli import main
from sapo_vl.data import load_dataset_by_name, write_jsonl, write_parquet

from .helpers import FIXTURES

ROOT = Path(__file__).resolve().parents[2]
EVAL_TASKS = sorted(p.stem for p in (ROOT / "eval").glob("*.yaml") if "fixture" in yaml.safe_load(p.read_text()))


def inspect(capsys, *argv) -> dict:
    assert main(["data", "inspect", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name,options", [
    ("synthetic_shapes", ["n=30", "num_colors=4"]), ("easy_vqa", ["--split", "test", "--limit", "40"]),
    ("human_eval", ["--split", "test"]),
])
def test_every_builtin_dataset_is_inspected(capsys, name, options):
    (info,) = inspect(capsys, name, *options).values()
    assert info["records"] > 0 and info["answers"]["distinct"] > 0 and info["unregistered_rewards"] == []
    if name != "human_eval":
        assert info["images_per_record"] == {"1": info["records"]} and info["image_width"]["min"] >= 32
    else:
        assert info["columns"] == ["code_prefix", "entry_point", "tests"] and info["rewards"] == {"code": 164}


def test_the_file_loaders_are_inspected_with_their_options(capsys, tmp_path):
    records = load_dataset_by_name("synthetic_shapes", split="test", n=6)
    write_parquet(records, tmp_path / "test.parquet")
    write_jsonl(records, tmp_path / "test.jsonl")
    for fmt in ("parquet", "jsonl"):
        (info,) = inspect(capsys, fmt, f"path={tmp_path}/{{split}}.{fmt}", "--split", "test").values()
        assert info["records"] == 6 and info["image_height"]["max"] == 32


@pytest.mark.parametrize("task", EVAL_TASKS)
def test_every_eval_fixture_is_inspected_as_its_task_reads_it(capsys, task):
    (info,) = inspect(capsys, f"task:{task}", "--fixture").values()
    assert 2 <= info["records"] == info["source_rows"] <= 3 and info["unregistered_rewards"] == []
    assert set(info["rewards"]) <= {"math", "mcq", "vqa", "code"}


def test_skips_are_counted_by_reason_with_the_first_example(capsys):
    path = FIXTURES / "tiny_vqa.jsonl"
    (info,) = inspect(capsys, str(path), "image_field=nope").values()
    assert info["records"] == 0 and info["skipped"] == {"missing_image": 4}
    assert "image column 'nope' is absent" in info["first_skip_of_each_reason"]["missing_image"]


def test_prompt_tokens_count_image_tokens_with_the_models_processor(capsys, tiny_dir):
    small = inspect(capsys, "synthetic_shapes", "n=4", "image_size=64", "--model", str(tiny_dir),
                    "--max-pixels", str(32 * 32))
    large = inspect(capsys, "synthetic_shapes", "n=4", "image_size=64", "--model", str(tiny_dir))
    (small,), (large,) = small.values(), large.values()
    assert large["prompt_tokens"]["min"] - small["prompt_tokens"]["min"] == 4 - 1  # 2x2 vs 1x1 merged patches


def test_a_recipe_is_inspected_source_by_source_and_split_by_split(capsys, tmp_path):
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"mixture": [
        {"dataset": "synthetic_shapes", "name": "colours", "kwargs": {"n": 8}, "eval_kwargs": {"n": 4}},
        {"dataset": "easy_vqa", "kwargs": {"limit": 5}, "reward": "vqa_typo"}]}}))
    assert main(["data", "inspect", str(recipe), "--json"]) == 2  # the typo is caught when the recipe loads
    assert "data.mixture[1].reward: unknown reward 'vqa_typo'" in capsys.readouterr().err
    recipe.write_text(recipe.read_text().replace("vqa_typo", "vqa"))
    info = inspect(capsys, str(recipe))
    assert list(info) == ["colours [train]", "colours [held-out]", "easy_vqa [train]", "easy_vqa [held-out]"]
    assert info["colours [held-out]"]["records"] == 4 and info["easy_vqa [train]"]["rewards"] == {"vqa": 5}


def test_unregistered_reward_names_in_records_are_flagged(capsys, tmp_path):
    (tmp_path / "d.jsonl").write_text('{"prompt": "p", "answer": "a", "reward": "vqa_typo"}\n'
                                      '{"prompt": "q", "answer": "b"}\n')
    (info,) = inspect(capsys, str(tmp_path / "d.jsonl")).values()
    assert info["rewards"] == {"vqa_typo": 1, "None": 1} and info["unregistered_rewards"] == ["vqa_typo"]


def test_an_unknown_source_is_a_one_line_error(capsys):
    assert main(["data", "inspect", "easy_vq"]) == 2
    assert "unknown dataset 'easy_vq'" in capsys.readouterr().err


def test_text_output_names_each_split(capsys):
    assert main(["data", "inspect", "synthetic_shapes", "n=5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("synthetic_shapes [train]\n") and "5 kept of 5 read" in out and "answers" in out
