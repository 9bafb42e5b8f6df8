"""Training configuration: YAML recipes, dotted overrides, validation with clear messages."""

from pathlib import Path

import pytest
import yaml

from sapo_vl.algos import loss_hparams
from sapo_vl.config import Config, ConfigError, load_config, save_config
from sapo_vl.errors import UserError

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
    assert cfg.algo.policy_loss == "sapo" and cfg.algo.loss_hparams == loss_hparams("sapo")
    assert {"tau_pos": 1.0, "tau_neg": 1.05}.items() <= cfg.algo.loss_hparams.items()  # the loss's own defaults
    assert cfg.algo.aggregation == "seq-mean-token-mean" and cfg.algo.kl_beta == 0.0
    assert cfg.rollout.group_size == 16 and cfg.warmup.labels == "shuffled"


def test_defaults_without_a_recipe():
    cfg = load_config(None)
    assert cfg.model_dump(exclude={"algo": {"loss_hparams"}}) == Config().model_dump(exclude={"algo": {"loss_hparams"}})
    assert cfg.algo.loss_hparams == loss_hparams("sapo")  # filled in from the loss's keyword defaults
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
    assert cfg.algo.loss_hparams == {**loss_hparams("sapo"), "tau_pos": 2.0, "tau_neg": 3.0}
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
    assert cfg.train.lr == 0.2 and cfg.algo.loss_hparams == {**loss_hparams("sapo"), "tau_pos": 2.0, "tau_neg": 3.0}


def test_exponent_without_a_dot_is_a_number_not_a_string(tmp_path):
    # YAML 1.1 reads 1e-6 as the string "1e-6"; the config turns it into the float it means
    cfg = load_config(_recipe(tmp_path, {"train": {"lr": "1e-6"}}), ["algo.loss_hparams.tau_neg=2e0",
                                                                       "train.total_steps=1e2"])
    assert cfg.train.lr == 1e-6 and isinstance(cfg.train.lr, float)
    assert cfg.algo.loss_hparams["tau_neg"] == 2.0 and cfg.train.total_steps == 100


def test_override_without_equals_sign_is_an_error():
    with pytest.raises(ConfigError, match="'train.lr' is not of the form dotted.key=value"):
        load_config(DEMO, ["train.lr"])


def test_unknown_key_error_names_the_key_and_lists_the_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, ["train.learning_rate=0.1"])
    message = str(err.value)
    assert "unknown key(s) train.learning_rate; valid keys: train.total_steps, train.lr," in message
    assert "log.keep_last" not in message  # the keys of the section in question


def test_unknown_key_error_suggests_a_close_match():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) rollout.group_sise \(did you mean "
                                          r"rollout.group_size\?\)"):
        load_config(DEMO, ["rollout.group_sise=4"])


def test_unknown_top_level_section_lists_the_sections_keys():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) trainer \(did you mean train\?\); valid keys: "
                                          r"imports, output_dir, seed"):
        load_config(DEMO, ["trainer.lr=0.1"])


def test_a_section_given_a_scalar_is_an_error():
    with pytest.raises(ConfigError, match="train: expected a mapping, got 3"):
        load_config(DEMO, ["train=3"])


@pytest.mark.parametrize("override,message", [
    ("train.total_steps=abc", r"train.total_steps: expected a valid integer.*, got 'abc'"),
    ("train.lr=fast", r"train.lr: expected a valid number.*, got 'fast'"),
    ("log.plot=maybe", r"log.plot: expected a valid boolean.*, got 'maybe'"),
    ("train.total_steps=2.5", r"train.total_steps: expected a valid integer.*fractional part, got 2.5"),
    ("data.min_pixels=lots", r"data.min_pixels: expected a valid integer.*, got 'lots'"),
    ("log.backends=jsonl", r"log.backends: expected a valid list, got 'jsonl'"),
    ("train.adam_betas=[0.9]", r"train.adam_betas: too few items, got \[0.9\]"),
    ("algo.loss_hparams={tau_pos: fast}", r"algo.loss_hparams.tau_pos: expected a valid number.*, got 'fast'"),
])
def test_values_of_the_wrong_type_are_named(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(DEMO, [override])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("override,message", [
    ("algo.policy_loss=ppo2", r"algo.policy_loss: unknown policy loss 'ppo2'; registered policy losses: cispo, grpo, "
                              r"gspo, gspo-token, sapo"),
    ("algo.aggregation=sum", r"algo.aggregation: unknown .*'sum'.*token-mean"),
    ("algo.kl_estimator=k4", r"algo.kl_estimator: unknown .*'k4'.*k3"),
    ("algo.advantage=rlo", r"algo.advantage: unknown advantage 'rlo'; .* \(did you mean 'rloo'\?\)"),
    ("rollout.group_size=1", r"rollout.group_size: expected a number greater than or equal to 2, got 1"),
    ("rollout.temperature=0", "rollout.temperature: expected a number greater than 0, got 0"),
    ("train.lr_schedule=linear", "train.lr_schedule: expected 'constant' or 'cosine', got 'linear'"),
    ("data.on_error=ignore", "data.on_error: expected 'raise' or 'skip', got 'ignore'"),
    ("warmup.labels=random", "warmup.labels: expected 'shuffled' or 'gold', got 'random'"),
    ("data.dataset=easy_vq", r"data.dataset: unknown dataset 'easy_vq'.*\(did you mean 'easy_vqa'\?\)"),
    ("reward.funcs={vqaa: 1}", r"reward.funcs: unknown reward 'vqaa'.*\(did you mean 'vqa'\?\)"),
    ("algo.preset=dapoo", r"algo.preset: unknown (algorithm )?preset 'dapoo'.*\(did you mean 'dapo'\?\)"),
    ("train.lr=.inf", "train.lr: expected a finite number, got inf"),
    ("warmup.lr=.inf", "warmup.lr: expected a finite number, got inf"),
    ("reward.funcs={vqa: .inf}", "reward.funcs.vqa: expected a finite number, got inf"),
    ("reward.funcs={vqa: high}", "reward.funcs.vqa: expected a valid number.*, got 'high'"),
    ("data.min_pixels=4096", r"data: min_pixels \(4096\) must not exceed max_pixels \(1024\)"),
    ("log.backends=[jsonl, tensorbord]", r"log.backends\[1\]: expected 'jsonl', 'tensorboard', .*got 'tensorbord'"),
    ("log.backends=[jsonl, jsonl]", r"log: backends: name each once"),
    ("reward.on_timeout=drop", "reward.on_timeout: expected 'zero' or 'skip'"),
    ("train.packing=always", "train.packing: expected 'auto', 'on' or 'off', got 'always'"),
    ("rollout.old_logprobs=vllm", "rollout.old_logprobs: expected 'auto', 'sampler' or 'score', got 'vllm'"),
    ("rollout.temperature=.nan", "rollout.temperature: expected a finite number, got nan"),
    ("reward.funcs={}", "reward: funcs must name at least one reward function"),
    ("reward.accuracy=math", r"reward: accuracy \('math'\) must be one of funcs \['vqa'\]"),
    ("log.keep_last=-1", "log.keep_last: expected a number greater than or equal to 0, got -1"),
    ("algo.loss_hparams={eps_high: 0.3}", r"algo.loss_hparams: policy loss 'sapo' has no hyperparameter\(s\) "
                                          r"eps_high; its hyperparameters: tau_pos = 1.0, tau_neg = 1.05"),
    ("algo.loss_hparams={tau_neg: 1.5, tau_pos: 1.0, tau_poss: 2}", r"tau_poss \(did you mean tau_pos\?\)"),
    ("algo.loss_hparams={tau_pos: -1}", r"algo.loss_hparams: .*tau_pos"),
])
def test_invalid_values_give_clear_errors(override, message):
    with pytest.raises(UserError, match=message) as info:
        load_config(DEMO, [override, *(["data.max_pixels=1024"] if "min_pixels" in override else [])])
    assert "\n" not in str(info.value)



def test_a_yaml_syntax_error_names_the_recipe_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML: .*line \d+") as info:
        load_config(bad)
    assert "\n" not in str(info.value)


def test_switching_the_loss_needs_its_own_hyperparameters():
    sapo = ["algo.loss_hparams={tau_pos: 1.0, tau_neg: 1.05}"]
    with pytest.raises(ConfigError, match=r"policy loss 'grpo' has no hyperparameter\(s\) tau_neg, tau_pos.*"
                                          r"replace them all"):
        load_config(DEMO, [*sapo, "algo.policy_loss=grpo", "algo.loss_hparams.eps_high=0.28"])
    cfg = load_config(DEMO, [*sapo, "algo.policy_loss=grpo", "algo.loss_hparams={eps_high: 0.28}"])
    assert cfg.algo.loss_hparams == {**loss_hparams("grpo"), "eps_high": 0.28}


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
    from sapo_vl.algos import POLICY_LOSSES
    from sapo_vl.config import describe_config
    from sapo_vl.sections import DataSource

    lines = describe_config()
    assert "  algo.policy_loss = 'sapo'  (sapo | grpo | gspo | gspo-token | cispo)" in lines
    assert "  algo.loss_hparams = {}  (per loss; a key left out takes the loss's default:)" in lines
    assert ("  data.mixture[].dataset = <required>  (synthetic_shapes | synthetic_shapes_colors | easy_vqa | "
            "human_eval | jsonl | json | parquet | disk)") in lines
    assert ("  algo.rollout_correction.mode = 'none'  (none | token_truncate | token_mask | sequence_truncate | "
            "sequence_mask)") in lines
    assert "  train.lr_schedule = 'constant'  (constant | cosine)" in lines  # a Literal's values
    keys = [line.split(" = ")[0].strip() for line in lines if line.startswith("  ") and not line.startswith("    ")]
    assert len(keys) == len(set(keys)) == len(flat_keys(Config)) + len(DataSource.model_fields)
    assert len(lines) == len(keys) + len(POLICY_LOSSES)  # + one line of hyperparameters per loss
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "rollout.group_size = 8" in out
    assert "      sapo: tau_pos = 1.0, tau_neg = 1.05" in out and "      grpo: eps_low = 0.2, eps_high = 0.2" in out


def flat_keys(model, prefix=""):
    from sapo_vl.sections import sub_model

    return [k for name in model.model_fields for k in (
        flat_keys(sub_model(model, name), f"{prefix}{name}.") if sub_model(model, name) and name != "mixture"
        else [prefix + name])]


# ------------------------------------------------------------------------------------------ presets, mixtures, plugins


def test_a_preset_in_an_override_resets_the_algorithm_keys_and_later_overrides_win():
    cfg = load_config(DEMO, ["algo.preset=dapo", "algo.loss_hparams.eps_high=0.3"])
    a = cfg.algo
    assert (a.policy_loss, a.aggregation, a.advantage, a.filter_zero_variance) == ("grpo", "token-mean", "grpo", True)
    assert a.loss_hparams == {**loss_hparams("grpo"), "eps_low": 0.2, "eps_high": 0.3}


def test_a_preset_in_a_recipe_sits_under_the_recipes_own_keys(tmp_path):
    cfg = load_config(_recipe(tmp_path, {"algo": {"preset": "dr_grpo", "loss_hparams": {"eps_high": 0.28}}}))
    assert (cfg.algo.aggregation, cfg.algo.advantage) == ("seq-mean-token-sum-norm", "dr_grpo")
    assert cfg.algo.loss_hparams == {**loss_hparams("grpo"), "eps_high": 0.28}


def test_a_mixture_entry_is_checked_like_a_section(tmp_path):
    mixture = [{"dataset": "synthetic_shapes", "weight": 2}, {"dataset": "easy_vqa", "reward": "vqa",
                                                                "kwargs": {"limit": 10}}]
    cfg = load_config(_recipe(tmp_path, {"data": {"mixture": mixture}}))
    assert [(s.dataset, s.weight, s.reward) for s in cfg.data.mixture] == [("synthetic_shapes", 2.0, None),
                                                                             ("easy_vqa", 1.0, "vqa")]
    with pytest.raises(ConfigError, match=r"data.mixture\[0\]: missing required key\(s\) dataset"):
        load_config(_recipe(tmp_path, {"data": {"mixture": [{"weight": 1}]}}))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) data.mixture\[1\].weigth \(did you mean "):
        load_config(_recipe(tmp_path, {"data": {"mixture": [mixture[0], {"dataset": "easy_vqa", "weigth": 1}]}}))
    with pytest.raises(UserError, match=r"data.mixture\[1\].dataset: unknown dataset 'easyvqa'"):
        load_config(_recipe(tmp_path, {"data": {"mixture": [mixture[0], {"dataset": "easyvqa"}]}}))


@pytest.mark.parametrize("data,message", [
    ({"mixture": [{"dataset": "easy_vqa"}], "kwargs": {"n": 3}}, "data: mixture replaces dataset, kwargs"),
    ({"mixture": [{"dataset": "easy_vqa"}, {"dataset": "easy_vqa"}]}, r"source name\(s\) \['easy_vqa'\] appear twice"),
    ({"mixture": [{"dataset": "easy_vqa", "weight": 0}]},
     r"data.mixture\[0\].weight: expected a number greater than 0"),
    ({"dataset": None}, "data: name a dataset, or give a mixture"),
])
def test_inconsistent_mixtures_are_refused(tmp_path, data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_recipe(tmp_path, {"data": data}))


def test_a_source_reward_needs_the_auto_router(tmp_path):
    data = {"mixture": [{"dataset": "easy_vqa", "reward": "mcq"}]}
    with pytest.raises(ConfigError, match="only reward 'auto' reads: add auto to reward.funcs"):
        load_config(_recipe(tmp_path, {"data": data, "reward": {"funcs": {"vqa": 1.0}}}))


def test_recipe_imports_register_names_before_they_are_checked(tmp_path):
    (tmp_path / "my_losses.py").write_text(
        "from sapo_vl.algos import POLICY_LOSSES, register_policy_loss\n"
        "register_policy_loss('_test_plugin_loss', POLICY_LOSSES['sapo'], overwrite=True)\n")
    recipe = _recipe(tmp_path, {"imports": ["my_losses"], "algo": {"policy_loss": "_test_plugin_loss"}})
    try:
        assert load_config(recipe).algo.policy_loss == "_test_plugin_loss"
    finally:
        from sapo_vl.algos import POLICY_LOSSES

        POLICY_LOSSES.pop("_test_plugin_loss", None)


def test_a_missing_plugin_module_is_a_one_line_plugin_error(tmp_path):
    from sapo_vl.errors import PluginError

    with pytest.raises(PluginError, match="plug-in 'no_such_plugin_mod': no module named 'no_such_plugin_mod'"):
        load_config(_recipe(tmp_path, {}), imports=["no_such_plugin_mod"])


def test_a_mixture_on_the_command_line_replaces_the_recipes_dataset(tmp_path):
    recipe = _recipe(tmp_path, {"data": {"dataset": "synthetic_shapes", "kwargs": {"num_colors": 4},
                                         "eval_dataset": "easy_vqa", "eval_kwargs": {"limit": 3}}})
    cfg = load_config(recipe, ["data.mixture=[{dataset: easy_vqa, weight: 2}]"])
    assert [(s.dataset, s.weight) for s in cfg.data.mixture] == [("easy_vqa", 2.0)]
    assert (cfg.data.kwargs, cfg.data.eval_dataset, cfg.data.eval_kwargs) == ({}, None, {})
    cfg = load_config(recipe, ["data.dataset=null", "data.mixture=[{dataset: easy_vqa}]"])  # unset, then mix
    assert cfg.data.mixture[0].dataset == "easy_vqa"
    mixed = _recipe(tmp_path, {"data": {"mixture": [{"dataset": "easy_vqa"}]}})
    cfg = load_config(mixed, ["data.dataset=synthetic_shapes"])  # and a dataset replaces a recipe's mixture
    assert cfg.data.dataset == "synthetic_shapes" and cfg.data.mixture == []


def test_an_empty_override_value_is_null():
    cfg = load_config(DEMO, ["data.system_prompt="])
    assert cfg.data.system_prompt is None


def test_a_plugin_loss_gets_its_hyperparameters_checked_and_listed(tmp_path):
    from sapo_vl.algos import POLICY_LOSSES
    from sapo_vl.config import describe_config

    (tmp_path / "my_loss.py").write_text(
        "from sapo_vl.algos import POLICY_LOSSES, register_policy_loss\n"
        "def my_loss(*, logprobs, old_logprobs, advantages, response_mask, beta=0.5, mode='a'):\n"
        "    return POLICY_LOSSES['grpo'](logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages,\n"
        "                                 response_mask=response_mask)\n"
        "register_policy_loss('_test_my_loss', my_loss, overwrite=True)\n")
    recipe = _recipe(tmp_path, {"imports": ["my_loss"], "algo": {"policy_loss": "_test_my_loss"}})
    try:
        assert load_config(recipe).algo.loss_hparams == {"beta": 0.5, "mode": "a"}
        with pytest.raises(ConfigError, match=r"algo.loss_hparams.beta: expected a valid number.*got 'x'"):
            load_config(recipe, ["algo.loss_hparams.beta=x"])
        assert "      _test_my_loss: beta = 0.5, mode = 'a'" in describe_config()
    finally:
        POLICY_LOSSES.pop("_test_my_loss", None)


def test_resume_compares_configs_saved_before_loss_defaults_were_filled_in(tmp_path):
    from sapo_vl.config import check_resume

    cfg = load_config(DEMO, ["algo.preset=grpo"])
    old = cfg.to_dict()
    old["algo"]["loss_hparams"] = {"eps_low": 0.2, "eps_high": 0.2}  # as saved before: only what the preset set
    old["train"]["adam_betas"] = [0.9, 0.999]  # a YAML round trip makes the tuple a list
    check_resume(old, cfg, tmp_path)  # the same experiment
    old["algo"]["loss_hparams"] = {"eps_high": 0.28}
    with pytest.raises(ConfigError, match=r"algo.loss_hparams: .*-> .*resume=force"):
        check_resume(old, cfg, tmp_path)
    check_resume(old, load_config(DEMO, ["algo.preset=grpo", "resume=force"]), tmp_path)


def test_rollout_correction_is_a_typed_section_and_needs_a_scored_pi_old():
    cfg = load_config(DEMO, ["algo.rollout_correction.mode=token_mask", "rollout.old_logprobs=score"])
    assert cfg.algo.rollout_correction.mode == "token_mask" and cfg.algo.rollout_correction.threshold == 2.0
    with pytest.raises(ConfigError, match="algo.rollout_correction.mode: expected 'none', 'token_truncate'"):
        load_config(DEMO, ["algo.rollout_correction.mode=token"])
    with pytest.raises(ConfigError, match="threshold: expected a number greater than 1"):
        load_config(DEMO, ["algo.rollout_correction.threshold=1"])
    with pytest.raises(ConfigError, match="with rollout.old_logprobs=sampler they are pi_old"):
        load_config(DEMO, ["algo.rollout_correction.mode=token_mask", "rollout.old_logprobs=sampler"])
