"""`sapo-vl plan`: parameter counts, memory terms and verdicts against figures computed by hand, for the tiny models
and the published Qwen3-VL architectures (recipes/models/*.json, numbers from the model cards' config.json)."""

import json
from pathlib import Path

import pytest

from sapo_vl.config import load_config
from sapo_vl.errors import UserError
from sapo_vl.plan import (GiB, activation_bytes, kv_bytes_per_token, launch, model_config, model_sizes, oom_warning,
                          state_terms, terms, verdict)

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "recipes" / "models"


def _text_params(h, inter, layers, heads, kv_heads, head_dim, vocab, tied, experts=0, moe_inter=0):
    """Qwen3(-MoE) text decoder by hand."""
    q, kv = heads * head_dim, kv_heads * head_dim
    attention = h * q + 2 * h * kv + q * h + 2 * head_dim + 2 * h  # q, k, v, o projections; q/k norms; 2 norms
    mlp = h * experts + 3 * experts * h * moe_inter if experts else 3 * h * inter  # router + experts, or SwiGLU
    return layers * (attention + mlp) + vocab * h + h + (0 if tied else vocab * h)  # embeddings, norm, LM head


def _vision_params(hv, inter, depth, out, deepstack, positions, patch=16):
    """Qwen3-VL vision tower by hand."""
    embed = 3 * 2 * patch * patch * hv + hv + positions * hv  # conv3d patch embedding (+ bias), position table
    block = 2 * 2 * hv + (3 * hv * hv + 3 * hv) + (hv * hv + hv) + (2 * hv * inter + inter + hv)  # norms qkv proj MLP
    merger = 2 * hv + (16 * hv * hv + 4 * hv) + (4 * hv * out + out)  # norm over hv, 4hv -> 4hv -> out
    deepstack_merger = 8 * hv + (16 * hv * hv + 4 * hv) + (4 * hv * out + out)  # norm over the merged 4hv
    return embed + depth * block + merger + deepstack * deepstack_merger


QWEN3_VL = {  # name: (text params, vision params)
    "Qwen3-VL-2B-Instruct": (_text_params(2048, 6144, 28, 16, 8, 128, 151936, True),
                             _vision_params(1024, 4096, 24, 2048, 3, 2304)),
    "Qwen3-VL-4B-Instruct": (_text_params(2560, 9728, 36, 32, 8, 128, 151936, True),
                             _vision_params(1024, 4096, 24, 2560, 3, 2304)),
    "Qwen3-VL-8B-Instruct": (_text_params(4096, 12288, 36, 32, 8, 128, 151936, False),
                             _vision_params(1152, 4304, 27, 4096, 3, 2304)),
    "Qwen3-VL-30B-A3B-Instruct": (_text_params(2048, 6144, 48, 32, 4, 128, 151936, False, 128, 768),
                                  _vision_params(1152, 4304, 27, 2048, 3, 2304)),
}


def _config(name: str) -> dict:
    return json.loads((MODELS / f"{name}.json").read_text())


@pytest.mark.parametrize("name", QWEN3_VL)
def test_parameter_counts_of_the_published_architectures_match_the_hand_count(name):
    text, vision = QWEN3_VL[name]
    sizes = model_sizes(_config(name), freeze_vision=True)
    assert (sizes.total, sizes.vision, sizes.trainable) == (text + vision, vision, text)


def test_the_2b_count_is_the_one_hugging_face_publishes():
    assert sum(QWEN3_VL["Qwen3-VL-2B-Instruct"]) == 2_127_532_032  # huggingface.co/api/models/Qwen/Qwen3-VL-2B-Instruct


def test_moe_active_parameters_count_top_k_of_the_experts():
    sizes = model_sizes(_config("Qwen3-VL-30B-A3B-Instruct"), freeze_vision=False)
    idle = 48 * (128 - 8) * 3 * 2048 * 768  # per layer, 120 of 128 experts' gate, up and down projections rest
    assert sizes.active == sizes.total - idle == 3_891_664_112
    assert sizes.largest_unit == _text_params(2048, 0, 1, 32, 4, 128, 0, True, 128, 768) - 2048  # one layer


@pytest.mark.parametrize("moe", [True, False])
def test_parameter_counts_of_the_tiny_models_match_the_hand_count(moe):
    from sapo_vl.models.tiny import TinyConfig, build_model_config, build_tokenizer

    tiny = TinyConfig(moe=moe)
    tokenizer = build_tokenizer(tiny.vocab_size, tiny.seed)
    sizes = model_sizes(build_model_config(tiny, tokenizer).to_dict(), freeze_vision=False)
    text = _text_params(64, 128, 2, 4, 2, 16, len(tokenizer), False, 8 if moe else 0, 32)
    assert sizes.total == text + _vision_params(32, 64, 2, 64, 1, 64)
    assert sizes.total == (373_536 if moe else 323_360)


def _cfg(recipe="recipes/qwen3_vl_8b/geo3k.yaml", *overrides):
    return load_config(REPO / recipe, list(overrides))


def test_fsdp2_terms_of_the_8b_recipe_on_8_gpus_by_hand():
    cfg = _cfg()
    sizes = model_sizes(_config("Qwen3-VL-8B-Instruct"), cfg.model.freeze_vision)
    trainable, frozen = 8_190_735_360, 576_388_336  # text, vision (frozen)
    layer, block = 192_946_432, 15_239_504  # a decoder layer, a vision block
    root = trainable + frozen - 36 * layer - 27 * block
    t = state_terms(cfg, sizes, "fsdp2", 8)
    assert t["weights"] == (trainable * 4 + frozen * 4) / 8  # fp32 master weights, sharded
    assert t["gradients"] == trainable * 4 / 8 and t["optimizer (AdamW)"] == 2 * trainable * 4 / 8
    assert t["gathered units"] == (root + 2 * layer) * 2  # bf16 root and two layers unsharded


def test_ddp_terms_keep_everything_on_every_gpu_plus_buckets_and_autocast_copies():
    cfg = _cfg()
    sizes = model_sizes(_config("Qwen3-VL-8B-Instruct"), cfg.model.freeze_vision)
    t = state_terms(cfg, sizes, "ddp", 8)
    assert t["weights"] == sizes.total * 4 and t["gradients"] == 2 * sizes.trainable * 4
    assert t["bf16 autocast copies"] == sizes.total * 2 and "gathered units" not in t


def test_activations_with_and_without_gradient_checkpointing_by_hand():
    cfg = _cfg()
    sizes = model_sizes(_config("Qwen3-VL-8B-Instruct"), cfg.model.freeze_vision)
    h, q, kv, inter, layers, vocab, tokens = 4096, 4096, 1024, 12288, 36, 151936, 16384
    per_layer = (2 * h + 3 * q + 3 * kv) + (2 * h + 3 * inter)  # elements per token kept for the backward
    head = 2 * 1024 * vocab * 4 + vocab * h * 4  # two fp32 (chunk, vocab) buffers, the head's fp32 gradient
    assert activation_bytes(cfg, sizes, True) == tokens * (layers * h + per_layer) * 2 + head
    assert activation_bytes(cfg, sizes, False) == tokens * (layers * per_layer + h) * 2 + head
    assert round(activation_bytes(cfg, sizes, True) / GiB, 2) == 10.07


def test_rollout_kv_cache_by_hand():
    cfg = _cfg()
    sizes = model_sizes(_config("Qwen3-VL-8B-Instruct"), True)
    per_token = 2 * 36 * 8 * 128 * 2  # keys and values, 36 layers, 8 KV heads of 128, bf16
    assert kv_bytes_per_token(sizes.text, 2) == per_token
    at_once = 32 * (2048 + 2048) * per_token  # rollout.generation_batch_size sequences of prompt + completion
    assert terms(cfg, sizes, "fsdp2", 8).rollout["rollout KV cache"] == at_once == 18 * GiB


def test_the_verdict_names_the_largest_term_of_the_peak_phase():
    cfg = _cfg()
    sizes = model_sizes(_config("Qwen3-VL-8B-Instruct"), True)
    fits, why = verdict(terms(cfg, sizes, "ddp", 8), 80 * GiB)
    assert not fits and why.startswith("does NOT fit: peak 181.1 GiB per GPU (update)")
    assert why.endswith("largest term gradients (61.0 GiB)")
    fits, why = verdict(terms(cfg, sizes, "fsdp2", 8), 80 * GiB)
    assert fits and why == ("fits: peak 33.1 GiB per GPU (rollout) of 72.0 GiB usable; largest term rollout KV cache "
                            "(18.0 GiB)")


def test_train_warns_only_when_the_run_will_not_fit():
    cfg = _cfg()
    assert oom_warning(cfg, _config("Qwen3-VL-8B-Instruct"), "fsdp2", 8, 80 * GiB) is None
    warning = oom_warning(cfg, _config("Qwen3-VL-8B-Instruct"), "single", 1, 80 * GiB)
    assert warning.startswith("warning: this run likely runs out of GPU memory (does NOT fit")


def test_the_launch_comes_from_the_accelerate_config_or_the_recipe():
    cfg = _cfg()
    assert launch(str(REPO / "recipes/accelerate/fsdp2.yaml"), cfg) == ("fsdp2", 8)
    assert launch(str(REPO / "recipes/accelerate/ddp.yaml"), cfg) == ("ddp", 8)
    assert launch(None, cfg) == ("fsdp2", None)  # train.sharding: fsdp2
    assert launch(None, _cfg("recipes/tiny/demo.yaml")) == ("ddp", None)


def test_the_model_config_is_the_downloaded_one_else_the_bundled_published_one(tmp_path):
    recipe = REPO / "recipes/qwen3_vl_8b/geo3k.yaml"
    config, source = model_config(load_config(recipe), recipe)
    assert source == str(MODELS / "Qwen3-VL-8B-Instruct.json")
    (tmp_path / "config.json").write_text(json.dumps({**config, "note": "local"}))
    config, source = model_config(load_config(recipe, [f"model.path={tmp_path}"]), recipe)
    assert source == str(tmp_path / "config.json") and config["note"] == "local"
    with pytest.raises(UserError, match="no model config.*--model-config"):
        model_config(load_config(recipe, [f"model.path={tmp_path / 'Unknown-Model'}"]), recipe)


def test_a_config_transformers_cannot_build_is_a_one_line_error(tmp_path, capsys):
    from sapo_vl.cli import main

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no_such_model"}))
    code = main(["plan", str(REPO / "recipes/qwen3_vl_8b/geo3k.yaml"), "--model-config", str(tmp_path / "config.json")])
    assert code == 2 and "transformers cannot build an image-text model from this config" in capsys.readouterr().err


def test_plan_prints_the_table_and_exits_1_when_the_run_does_not_fit(capsys):
    from sapo_vl.cli import main

    code = main(["plan", str(REPO / "recipes/qwen3_vl_30b_a3b/geo3k.yaml"), "--gpus", "2"])
    out = capsys.readouterr().out
    assert code == 1 and "FSDP2 on 2 GPU(s) of 80 GiB" in out
    assert "31.1 B total, 30.5 B trainable (vision tower frozen), 3.89 B active per token (MoE)" in out
    assert "rollout KV cache: 128 sequences x 4,096 tokens = 48.0 GiB per step; 32 at a time" in out
    assert out.strip().splitlines()[-1].startswith("verdict under FSDP2: does NOT fit")


def test_plan_of_the_tiny_demo_needs_no_download(capsys):
    from sapo_vl.cli import main

    assert main(["plan", str(REPO / "recipes/tiny/demo.yaml"), "--gpus", "1", "--gpu-memory", "1"]) == 0
    out = capsys.readouterr().out
    assert "model config the tiny model; DDP on 1 GPU(s)" in out and "374 K total" in out
