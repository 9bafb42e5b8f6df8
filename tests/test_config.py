"""Training configuration: YAML recipes, dotted overrides, validation with clear messages."""

from pathlib import Path

import pytest
import yaml

from sapo_vl.config import Config, ConfigError, load_config, parse_overrides, save_config

DEMO = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "demo.yaml"


def _recipe(tmp_path, data) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


RECIPES = sorted(p for p in DEMO.parents[1].rglob("*.yaml") if p.parent.name != "accelerate")


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_training_recipe_loads(recipe):
    load_config(recipe)


def test_an_accelerate_config_given_as_recipe_says_how_to_use_it():
    with pytest.raises(ConfigError, match="is an accelerate config.*accelerate launch --config_file"):
        load_config(DEMO.parents[1] / "accelerate" / "ddp.yaml")


def test_demo_recipe_loads_with_sapo_paper_defaults():
    cfg = load_config(DEMO)
    assert cfg.model.path == "tiny" and cfg.data.dataset == "synthetic_shapes"
    assert cfg.algo.policy_loss == "sapo" and cfg.algo.loss_hparams == {"tau_pos": 1.0, "tau_neg": 1.05}
    assert cfg.algo.aggregation == "seq-mean-token-mean" and cfg.algo.kl_beta == 0.0
    assert cfg.rollout.group_size == 16 and cfg.warmup.labels == "shuffled"


def test_defaults_without_a_recipe():
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.algo.policy_loss == "sapo" and cfg.algo.aggregation == "seq-mean-token-mean"


def test_dotted_overrides_replace_nested_values_of_each_type(tmp_path):
    cfg = load_config(DEMO, [
        "output_dir=" + str(tmp_path / "run"),
        "train.total_steps=7",  # int
        "train.lr=0.5",  # float
        "log.plot=false",  # bool
        "log.backends=[jsonl]",  # list
        "algo.loss_hparams={tau_pos: 2.0, tau_neg: 3}",  # a whole dict
        "model.tiny.seed=4",  # a key inside a dict field
        "data.kwargs.num_colors=4",
        "data.eval_dataset=easy_vqa",
    ])
    assert cfg.output_dir == str(tmp_path / "run")
    assert cfg.train.total_steps == 7 and isinstance(cfg.train.total_steps, int)
    assert cfg.train.lr == 0.5 and cfg.log.plot is False and cfg.log.backends == ["jsonl"]
    assert cfg.algo.loss_hparams == {"tau_pos": 2.0, "tau_neg": 3}
    assert cfg.model.tiny == {"seed": 4} and cfg.data.kwargs == {"num_colors": 4}
    assert cfg.data.eval_dataset == "easy_vqa"
    assert cfg.rollout.group_size == 16  # untouched keys keep the recipe's values


def test_a_mapping_replaces_a_dict_field_but_merges_into_a_section():
    cfg = load_config(DEMO, ["reward.funcs={math: 1.0}", "train={lr: 0.1}"])
    assert cfg.reward.funcs == {"math": 1.0}  # the recipe's vqa reward is gone
    assert cfg.train.lr == 0.1 and cfg.train.micro_batch_tokens == 4096  # the recipe's other train keys stay
    cfg = load_config(DEMO, ["reward.funcs.format=0.1"])
    assert cfg.reward.funcs == {"vqa": 1.0, "format": 0.1}  # a dotted key adds to the dict


def test_later_overrides_win():
    cfg = load_config(DEMO, ["train.lr=0.1", "train={lr: 0.2}", "algo.loss_hparams={tau_pos: 2.0}",
                             "algo.loss_hparams.tau_neg=3.0"])
    assert cfg.train.lr == 0.2 and cfg.algo.loss_hparams == {"tau_pos": 2.0, "tau_neg": 3.0}


def test_exponent_without_a_dot_is_a_number_not_a_string(tmp_path):
    # YAML 1.1 reads 1e-6 as the string "1e-6"; the config turns it into the float it means
    cfg = load_config(_recipe(tmp_path, {"train": {"lr": "1e-6"}}), ["algo.loss_hparams.tau_neg=2e0",
                                                                       "train.total_steps=1e2"])
    assert cfg.train.lr == 1e-6 and isinstance(cfg.train.lr, float)
    assert cfg.algo.loss_hparams["tau_neg"] == 2.0 and cfg.train.total_steps == 100


def test_parse_overrides_builds_a_nested_tree():
    tree = parse_overrides(["a.b.c=1", "a.d=[x, 2]", "e=", "f=null"])
    assert tree == {"a": {"b": {"c": 1}, "d": ["x", 2]}, "e": "", "f": None}


def test_override_without_equals_sign_is_an_error():
    with pytest.raises(ConfigError, match="'train.lr' is not of the form dotted.key=value"):
        load_config(DEMO, ["train.lr"])


def test_unknown_key_error_names_the_key_and_lists_the_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, ["train.learning_rate=0.1"])
    message = str(err.value)
    assert "unknown config key(s) train.learning_rate; valid keys: train.total_steps, train.lr," in message
    assert "log.keep_last" not in message  # the keys of the section in question


def test_unknown_key_error_suggests_a_close_match():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) rollout.group_sise \(did you mean "
                                          r"rollout.group_size\?\)"):
        load_config(DEMO, ["rollout.group_sise=4"])


def test_unknown_top_level_section_lists_the_sections_keys():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) trainer.*valid keys: output_dir, seed"):
        load_config(DEMO, ["trainer.lr=0.1"])


def test_a_section_given_a_scalar_is_an_error():
    with pytest.raises(ConfigError, match="train: expected a mapping, got int"):
        load_config(DEMO, ["train=3"])


@pytest.mark.parametrize("override,message", [
    ("train.total_steps=abc", r"train.total_steps: expected int, got 'abc'"),
    ("train.lr=fast", r"train.lr: expected float, got 'fast'"),
    ("log.plot=maybe", r"log.plot: expected bool, got 'maybe'"),
    ("train.total_steps=2.5", r"train.total_steps: expected int, got 2.5"),
    ("data.min_pixels=lots", r"data.min_pixels: expected int or null, got 'lots'"),
    ("log.backends=jsonl", r"log.backends: expected list, got 'jsonl'"),
])
def test_values_of_the_wrong_type_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEMO, [override])


@pytest.mark.parametrize("override,message", [
    ("algo.policy_loss=ppo2", r"algo.policy_loss must be one of \['cispo', 'grpo', 'gspo', 'gspo-token', 'sapo'\]"),
    ("algo.aggregation=sum", "algo.aggregation must be one of"),
    ("algo.advantage=ppo", "algo.advantage must be one of"),
    ("rollout.group_size=1", r"rollout.group_size must be >= 2"),
    ("rollout.temperature=0", "rollout.temperature must be > 0"),
    ("train.lr_schedule=linear", "train.lr_schedule must be constant or cosine"),
    ("data.on_error=ignore", "data.on_error must be raise or skip"),
    ("warmup.labels=random", "warmup.labels must be shuffled or gold"),
    ("reward.funcs={}", "reward.funcs must name at least one reward function"),
    ("reward.accuracy=math", r"reward.accuracy \('math'\) must be one of reward.funcs \['vqa'\]"),
    ("log.keep_last=-1", "log.keep_last must be >= 0"),
    ("algo.loss_hparams={eps_high: 0.3}", r"algo.loss_hparams: .*'sapo'.*eps_high.*tau_neg"),
    ("algo.loss_hparams={tau_pos: -1}", r"algo.loss_hparams: .*tau_pos"),
])
def test_invalid_values_give_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEMO, [override])


def test_switching_the_loss_needs_its_own_hyperparameters():
    with pytest.raises(ConfigError, match=r"'grpo': unknown argument\(s\) \['tau_neg', 'tau_pos'\].*replace them all"):
        load_config(DEMO, ["algo.policy_loss=grpo", "algo.loss_hparams.eps_high=0.28"])
    cfg = load_config(DEMO, ["algo.policy_loss=grpo", "algo.loss_hparams={eps_high: 0.28}"])
    assert cfg.algo.loss_hparams == {"eps_high": 0.28}


def test_mini_batches_must_divide_the_rollout_batch():
    with pytest.raises(ConfigError, match=r"prompts_per_step x group_size \(12\) must be divisible by "
                                          r"train.num_mini_batches \(5\)"):
        load_config(DEMO, ["rollout.prompts_per_step=3", "rollout.group_size=4", "train.num_mini_batches=5"])
    cfg = load_config(DEMO, ["rollout.prompts_per_step=3", "rollout.group_size=4", "train.num_mini_batches=4"])
    assert cfg.train.num_mini_batches == 4


def test_missing_recipe_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="recipe not found"):
        load_config(tmp_path / "nope.yaml")


def test_saved_config_loads_back_equal(tmp_path):
    cfg = load_config(DEMO, ["train.lr=1e-4", "log.backends=[jsonl]", "data.max_pixels=4096"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_train_help_lists_every_config_key_with_its_default(capsys):
    from sapo_vl.cli import main
    from sapo_vl.config import Config, _valid_keys, describe_config

    lines = describe_config()
    assert "  algo.policy_loss = 'sapo'" in lines
    assert "  algo.loss_hparams = {}" in lines
    assert len(lines) == len(_valid_keys(Config))
    assert main(["train", "--help"]) == 0
    assert "rollout.group_size = 8" in capsys.readouterr().out
