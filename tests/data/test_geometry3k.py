"""The Geometry3K recipes read the Hugging Face release (hiyouga/geometry3k) as it downloads: the fixture under
data/fixtures/geometry3k/ has its layout (data/{split}-00000-of-00001.parquet; images as a list of {bytes, path}
structs, problem with an <image> marker, answer)."""

from pathlib import Path

import pytest
from PIL import Image

from sapo_vl.config import load_config
from sapo_vl.data.mixture import load_sources

from .helpers import FIXTURES

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("qwen3_vl_*/geo3k.yaml"))
RELEASE = FIXTURES / "geometry3k" / "data" / "{split}-00000-of-00001.parquet"


def test_there_is_a_geometry3k_recipe_for_each_model_size():
    assert [p.parent.name for p in RECIPES] == ["qwen3_vl_2b", "qwen3_vl_30b_a3b", "qwen3_vl_4b", "qwen3_vl_8b"]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.parent.name)
def test_the_recipe_trains_on_the_train_split_and_holds_out_the_test_split(recipe):
    cfg = load_config(recipe, [f"data.kwargs.path={RELEASE}"])
    [source] = load_sources(cfg.data)
    assert (len(source.train), len(source.eval)) == (4, 2)  # train and test files; validation left alone
    rec = source.train[2]
    assert rec["prompt"].startswith("<image>Find y.") and "\\boxed{}" in rec["prompt"]
    assert rec["answer"] == "2\\sqrt{3}" and rec["reward"] == "math"
    assert len(rec["images"]) == 1 and isinstance(rec["images"][0], Image.Image)
    assert [r["answer"] for r in source.eval] == ["5", "45"]


def test_the_diagram_goes_where_the_problem_says_image(tiny_dir):
    from sapo_vl.models.load import load_processor
    from sapo_vl.rollout.collate import PromptFormat, build_messages

    processor = load_processor(tiny_dir)
    cfg = load_config(RECIPES[0], [f"data.kwargs.path={RELEASE}"])
    [source] = load_sources(cfg.data)
    [message] = build_messages(source.train[0], PromptFormat(processor))
    assert [part["type"] for part in message["content"]] == ["image", "text"]
    assert message["content"][1]["text"].startswith("Find x.")


def test_the_default_path_is_where_hf_download_puts_the_release():
    cfg = load_config(RECIPES[0])
    assert cfg.data.kwargs["path"] == "/data/geometry3k/data/{split}-00000-of-00001.parquet"
    assert (cfg.data.split, cfg.data.eval_split) == ("train", "test")
