"""Plug-ins from the command line: the README's plug-in package, installed with pip, feeds train, eval and inspect
through its entry point; the same module passed by a recipe's imports: and by --import does too; user errors are one
line and exit 2 before any model is built, bugs keep their traceback."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sapo_vl.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recipes" / "tiny" / "demo.yaml"
TINY = ["log.plot=false", "log.progress=false", "log.eval_limit=2", "rollout.group_size=2",
        "rollout.prompts_per_step=2", "rollout.max_new_tokens=3", "warmup.steps=0", "train.total_steps=1",
        "reward.num_workers=1", "train.num_mini_batches=1", "data.kwargs={n: 8}"]
TASK = {"name": "dots", "source": {"type": "registered", "name": "dots", "split": "test", "kwargs": {"n": 3}},
        "verifier": {"name": "count"}, "generation": {"max_new_tokens": 3}}


def readme_files() -> dict[str, str]:
    """The plug-in package of data/README.md: every fenced block whose first line is ``# sapo-vl-dots/<file>``."""
    text = (ROOT / "data" / "README.md").read_text()
    blocks = re.findall(r"```\w+\n# (sapo-vl-dots/\S+)\n(.*?)```", text, flags=re.S)
    return {name: body for name, body in blocks}


def _write_package(where: Path) -> Path:
    files = readme_files()
    assert set(files) == {"sapo-vl-dots/pyproject.toml", "sapo-vl-dots/sapo_vl_dots.py"}
    for name, body in files.items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_text(body)
    return where / "sapo-vl-dots"


def _sapo_vl(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sapo_vl.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.timeout(600)
def test_the_readme_plugin_package_installs_and_feeds_inspect_train_and_eval(tmp_path, tiny_dir):
    package = _write_package(tmp_path)
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(package)]
    if importlib.util.find_spec("setuptools") is not None:
        pip.insert(5, "--no-build-isolation")  # build offline with the venv's setuptools
    subprocess.run(pip, check=True, capture_output=True, timeout=300)
    assert (site / "sapo_vl_dots.py").is_file() and list(site.glob("sapo_vl_dots-*.dist-info"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}

    inspected = _sapo_vl(["data", "inspect", "dots", "n=20", "--json"], env, tmp_path)
    assert inspected.returncode == 0, inspected.stderr
    info = json.loads(inspected.stdout)["dots [train]"]
    assert info["records"] == 20 and info["rewards"] == {"count": 20} and info["unregistered_rewards"] == []

    out = tmp_path / "run"
    trained = _sapo_vl(["train", str(DEMO), *TINY, f"output_dir={out}", f"model.path={tiny_dir}",
                        "data.dataset=dots", "reward.funcs={count: 1.0}"], env, tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("reward/count" in row for row in rows)

    (tmp_path / "dots.yaml").write_text(yaml.safe_dump(TASK))
    evaluated = _sapo_vl(["eval", "--tasks", "dots.yaml", "--model", str(out / "checkpoints" / "latest"),
                          "--output-dir", "ev", "--no-progress"], env, tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["results"]["dots"]["n_docs"] == 3


@pytest.fixture
def plugin_module(tmp_path):
    """The README's plug-in module as a file next to a recipe; its registrations are removed afterwards."""
    from sapo_vl.data import DATASETS
    from sapo_vl.rewards import REWARDS

    (tmp_path / "sapo_vl_dots.py").write_text(readme_files()["sapo-vl-dots/sapo_vl_dots.py"])
    yield tmp_path
    DATASETS.pop("dots", None)
    REWARDS.pop("count", None)
    sys.modules.pop("sapo_vl_dots", None)


def test_a_module_named_by_a_recipes_imports_feeds_train(plugin_module, tiny_dir, monkeypatch):
    monkeypatch.chdir(plugin_module.parent)  # not the plug-in's folder: the recipe's folder is searched
    recipe = plugin_module / "dots_recipe.yaml"
    recipe.write_text(yaml.safe_dump({**yaml.safe_load(DEMO.read_text()), "imports": ["sapo_vl_dots"]}))
    out = plugin_module / "run"
    assert main(["train", str(recipe), *TINY, f"output_dir={out}", f"model.path={tiny_dir}", "data.dataset=dots",
                 "reward.funcs={count: 1.0}"]) == 0
    assert (out / "checkpoints" / "latest" / "config.json").is_file()
    assert yaml.safe_load((out / "config.yaml").read_text())["imports"] == ["sapo_vl_dots"]
    # the same file given as a path later is the same module: not imported (and registered) twice
    from sapo_vl.plugins import import_plugins

    assert import_plugins([str(plugin_module / "sapo_vl_dots.py")])[0] is sys.modules["sapo_vl_dots"]


def test_a_module_given_with_import_feeds_eval(plugin_module, tiny_dir, capsys):
    (plugin_module / "dots.yaml").write_text(yaml.safe_dump(TASK))
    assert main(["eval", "--import", str(plugin_module / "sapo_vl_dots.py"), "--tasks",
                 str(plugin_module / "dots.yaml"), "--model", str(tiny_dir), "--output-dir",
                 str(plugin_module / "ev"), "--no-progress"]) == 0
    assert "| dots |" in capsys.readouterr().out


def test_a_user_error_is_one_line_exit_2_before_any_model_is_built(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", str(DEMO), f"output_dir={out}", "data.dataset=easy_vq"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("sapo-vl train: error: data.dataset: unknown dataset 'easy_vq'") and "'easy_vqa'" in err
    assert not out.exists()  # nothing built, nothing written


def test_a_missing_plugin_is_a_user_error_on_every_subcommand(capsys):
    for argv in (["train", str(DEMO), "--import", "no_such_plugin"], ["eval", "--import", "no_such_plugin"],
                 ["data", "inspect", "easy_vqa", "--import", "no_such_plugin"]):
        assert main(argv) == 2
        assert "plug-in 'no_such_plugin': no module named 'no_such_plugin'" in capsys.readouterr().err


def test_bad_data_is_a_user_error_before_the_weights_load(tmp_path, capsys, monkeypatch):
    import sapo_vl.policy_state as policy_state

    def no_weights(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(policy_state, "load_policy", no_weights)
    (tmp_path / "d.jsonl").write_text('{"prompt": "p", "answer": "a", "reward": "vqa_typo"}\n')
    code = main(["train", str(DEMO), f"output_dir={tmp_path / 'run'}", "data.dataset=jsonl",
                 f"data.kwargs={{path: '{tmp_path / 'd.jsonl'}'}}", "reward.funcs={auto: 1.0}", "warmup.steps=0"])
    err = capsys.readouterr().err
    assert code == 2 and "record 'd-0', field 'reward': unknown reward 'vqa_typo'" in err
    assert not (tmp_path / "run" / "tiny_init").exists()  # before any model is built, the tiny one included


def test_a_bug_inside_a_builder_keeps_its_traceback(tmp_path, monkeypatch):
    from sapo_vl.data import DATASETS

    def broken(split="train"):
        raise RuntimeError("a bug in the builder")

    monkeypatch.setitem(DATASETS, "broken", broken)
    with pytest.raises(RuntimeError, match="a bug in the builder"):
        main(["train", str(DEMO), f"output_dir={tmp_path / 'run'}", "data.dataset=broken", "data.kwargs={}"])
