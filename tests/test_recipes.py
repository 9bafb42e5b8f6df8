"""The real-size recipes: each loads (config validation, no weights), its header says how to get the weights and the
data, which GPUs it was sized for and how to launch it, and states what `sapo-vl plan` computes; the README launches
them the same way."""

import re
from pathlib import Path

import pytest

from sapo_vl.config import load_config
from sapo_vl.commands.plan import launch, model_config, plan
from sapo_vl.plan_terms import GPUS, gpu_device

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("qwen3_vl_*/*.yaml"))
FSDP2 = "recipes/accelerate/fsdp2.yaml"


def _header(recipe: Path) -> str:
    return "\n".join(line for line in recipe.read_text().splitlines() if line.startswith("#"))


def _sized(recipe: Path) -> tuple[int, str]:
    """(number of GPUs, GPU name as ``sapo-vl plan --gpu`` takes it) from the header's "Sized for" line."""
    count, gpu = re.search(r"# Sized for: (\d+) x (\S+) GPUs", _header(recipe)).groups()
    assert gpu in GPUS
    return int(count), gpu


def _gpus(recipe: Path) -> int:
    return _sized(recipe)[0]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.parent.name)
def test_the_recipe_loads_and_its_header_says_how_to_get_and_launch_it(recipe):
    cfg = load_config(recipe)
    rel, name = recipe.relative_to(REPO).as_posix(), Path(cfg.model.path).name
    header = " ".join(_header(recipe).replace("#", " ").replace("\\", " ").split())
    assert f"hf download Qwen/{name} --local-dir {cfg.model.path}" in header
    assert "hf download hiyouga/geometry3k --repo-type dataset --local-dir /data/geometry3k" in header
    assert f"accelerate launch --config_file {FSDP2} --num_processes {_gpus(recipe)} -m sapo_vl.cli train {rel}" \
        in header
    assert cfg.train.sharding == "fsdp2" and cfg.model.dtype == "float32" and cfg.data.eval_split == "test"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.parent.name)
def test_the_memory_in_the_header_is_what_plan_computes_and_it_fits_with_8_percent_to_spare(recipe):
    cfg = load_config(recipe)
    rel, (gpus, gpu) = recipe.relative_to(REPO).as_posix(), _sized(recipe)
    assert f"sapo-vl plan {rel} --accelerate-config {FSDP2} --gpus {gpus} --gpu {gpu}" in _header(recipe)
    strategy, _ = launch(str(REPO / FSDP2), cfg)
    fits, lines = plan(cfg, model_config(cfg, recipe)[0], strategy, gpus, gpu_device(gpu))
    margin = float(re.search(r"margin (-?[\d.]+)%", lines[-1]).group(1))
    assert fits and margin >= 8.0
    stated = re.search(r"#\s+-> (.*)", _header(recipe)).group(1)
    assert lines[-1] == f"verdict under FSDP2: {stated}"
    regime = next(line for line in lines if line.startswith("rollout regime:"))
    assert f"# {regime}" in " ".join(_header(recipe).split()).replace("# #", "#")  # the header states its cost


def test_the_readme_launches_every_recipe_as_its_header_does():
    readme = " ".join(REPO.joinpath("README.md").read_text().replace("\\\n", " ").split())
    for recipe in RECIPES:
        rel = recipe.relative_to(REPO).as_posix()
        assert f"--config_file {FSDP2} --num_processes {_gpus(recipe)} -m sapo_vl.cli train {rel}" in readme, rel
    launched = re.findall(r"--config_file (\S+)(?: --num_processes \d+)? -m sapo_vl.cli train (recipes/qwen3\S+)",
                          readme)
    assert launched and all(config == FSDP2 for config, _ in launched)
