"""`sapo-vl plan`: parameter counts, memory terms, phases, the generation regime and verdicts against figures
computed by hand from the definitions in sapo_vl/plan_terms.py's docstring, for the tiny models and the published
Qwen3-VL architectures (recipes/models/*.json, numbers from the model cards' config.json)."""

import json
import math
from pathlib import Path

import pytest

from sapo_vl.config import load_config
from sapo_vl.errors import UserError
from sapo_vl.commands.plan import launch, model_config
from sapo_vl.plan_terms import oom_warning
from sapo_vl.plan_terms import (GiB, Precision, activation_bytes, aux_bytes, cpu_device, gpu_device, kv_bytes_per_token,
                                model_sizes, plan_phases, precision, verdict)

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


def _block(hv, inter):
    """One Qwen3-VL vision block: two norms, qkv, projection, MLP (as in _vision_params)."""
    return 2 * 2 * hv + (3 * hv * hv + 3 * hv) + (hv * hv + hv) + (2 * hv * inter + inter + hv)


def _layer(h, heads, kv_heads, head_dim, inter=0, experts=0, moe_inter=0):
    """One decoder layer: a one-layer, vocabulary-free text model less its final norm."""
    return _text_params(h, inter, 1, heads, kv_heads, head_dim, 0, True, experts, moe_inter) - h


def _cfg(recipe="recipes/qwen3_vl_8b/geo3k.yaml", *overrides):
    return load_config(REPO / recipe, list(overrides))


# The 30B-A3B recipe by hand: 8 x H100, FSDP2, fp32 master weights, bf16 compute, vision frozen, aux loss on.
T30, V30 = QWEN3_VL["Qwen3-VL-30B-A3B-Instruct"]
LAYER30 = _layer(2048, 32, 4, 128, experts=128, moe_inter=768)  # 623 M
ROOT30 = T30 + V30 - 48 * LAYER30 - 27 * _block(1152, 4304)
H100, RESERVE = 79.2 * GiB, 1.5 * GiB
KV30 = 32 * (2048 + 2048) * (2 * 48 * 4 * 128 * 2)  # generation_batch_size x tokens x (K, V of 48 layers) in bf16
LOGITS30 = 32 * 151936 * 4  # one decoding step's fp32 logits per sequence


def _plan30(*overrides, gpus=8, device=None):
    cfg = _cfg("recipes/qwen3_vl_30b_a3b/geo3k.yaml", *overrides)
    return plan_phases(cfg, _config("Qwen3-VL-30B-A3B-Instruct"), strategy="fsdp2", processes=gpus,
                       device=device or gpu_device("h100"))


def _rollout_others30(w=4):
    """Every rollout term of the 30B recipe but the kept layers: reserve, sharded weights and AdamW, root + two
    layers gathered in bf16, KV cache, logits, 10% fragmentation of the last two."""
    weights, optimizer = (T30 + V30) * w / 8, 2 * T30 * w / 8
    return RESERVE + weights + optimizer + (ROOT30 + 2 * LAYER30) * 2 + 1.1 * (KV30 + LOGITS30)


def test_named_gpus_are_their_memory_as_torch_reports_it_and_gpu_memory_overrides():
    assert [gpu_device(g).capacity / GiB for g in ("h100", "h200", "a100-80", "a100-40")] == [79.2, 139.8, 79.2, 39.4]
    assert gpu_device("h100").reserve == 1.5 * GiB and gpu_device("h100").fragmentation == 0.10
    assert gpu_device("h100", memory_gib=80).capacity == 80 * GiB
    assert gpu_device(bandwidth_gbs=400).bandwidth == 400e9
    with pytest.raises(UserError, match="--gpu 'v100'"):
        gpu_device("v100")


def test_float32_and_auto_train_fp32_state_and_bfloat16_is_pure_bf16():
    fp32 = Precision(weights=4, compute=2, file=2)  # fp32 master weights, gradients and moments; bf16 compute
    assert precision(_cfg()) == precision(_cfg("recipes/qwen3_vl_8b/geo3k.yaml", "model.dtype=auto")) == fp32
    bf16 = precision(_cfg("recipes/qwen3_vl_8b/geo3k.yaml", "model.dtype=bfloat16"))
    assert (bf16.weights, bf16.compute) == (2, 2)
    auto = _cfg("recipes/tiny/demo.yaml")  # model.dtype and train.mixed_precision auto
    assert (precision(auto, "cuda").compute, precision(auto, "cpu").compute) == (2, 4)
    assert precision(_cfg("recipes/qwen3_vl_8b/geo3k.yaml", 'train.mixed_precision="no"')).compute == 4
    assert precision(_cfg(), config=_config("Qwen3-VL-8B-Instruct")).file == 2  # text_config.dtype bfloat16


def test_fsdp2_state_of_the_30b_is_sharded_fp32_master_or_half_that_in_pure_bf16():
    for dtype, w in (("float32", 4), ("bfloat16", 2)):
        update = _plan30(f"model.dtype={dtype}").phases["update"]
        assert update["weights"] == (T30 + V30) * w / 8  # the frozen vision tower too, in the model dtype
        assert update["gradients"] == T30 * w / 8  # none for the frozen vision tower
        assert update["optimizer (AdamW)"] == 2 * T30 * w / 8
        assert update["gathered units"] == (ROOT30 + 2 * LAYER30) * 2  # bf16 compute either way
    assert round(_plan30().phases["update"]["optimizer (AdamW)"] / GiB, 2) == 28.44


def test_the_30b_reduce_scatter_buffer_is_a_layer_in_bf16_and_fp32_plus_its_fp32_shard():
    rs = _plan30().phases["update"]["reduce-scatter buffers"]
    assert rs == LAYER30 * (2 + 4) + LAYER30 * 4 / 8
    assert round(rs / GiB, 2) == 3.77


def test_the_moe_aux_transient_is_three_fp32_router_arrays_and_the_int64_top_k_per_layer_and_token():
    cfg = _cfg("recipes/qwen3_vl_30b_a3b/geo3k.yaml")
    text = model_sizes(_config("Qwen3-VL-30B-A3B-Instruct"), True).text
    assert aux_bytes(cfg, text) == 48 * 8192 * (3 * 128 * 4 + 8 * 8) == _plan30().phases["update"]["MoE aux transient"]
    assert aux_bytes(_cfg("recipes/qwen3_vl_30b_a3b/geo3k.yaml", "algo.moe_aux_coef=0"), text) == 0
    assert aux_bytes(_cfg(), model_sizes(_config("Qwen3-VL-8B-Instruct"), True).text) == 0  # dense


def test_the_rollout_keeps_as_many_layers_as_fit_beside_its_other_terms_and_times_the_all_gathers_of_the_rest():
    """The trainer's rule (``parallel.kept_units``): every decoder layer that fits in the memory free at the start
    of generation, beside the call's KV cache and logits, less 10% of the GPU."""
    p = _plan30()
    kept = math.floor((0.9 * H100 - _rollout_others30()) / (LAYER30 * 2))
    assert p.regime.kept == kept == 8 and p.regime.layers == 48
    assert p.phases["rollout"]["kept layers (generation)"] == 8 * LAYER30 * 2
    assert p.total("rollout") == pytest.approx(_rollout_others30() + 8 * LAYER30 * 2)
    per_token = 40 * LAYER30 * 2 * 7 / 8  # 40 layers, bf16, the 7/8 each rank receives
    steps = 2048 * math.ceil(16 * 8 / 32)  # max_new_tokens x generate calls per step
    assert (p.regime.bytes_per_token, p.regime.decoding_steps) == (per_token, steps)
    assert p.regime.seconds == pytest.approx(per_token * steps / 150e9)
    assert p.regime.describe() == ("rollout regime: 8 of 48 decoder layers kept gathered; 40 layers all-gathered per "
                                   "new token = 44 GB per token, ~2,382 s of all-gathers per step (8,192 decoding "
                                   "steps) at 150 GB/s")


def test_the_30b_on_h200_keeps_every_layer_gathered():
    p = _plan30(device=gpu_device("h200"))
    assert p.regime.kept == 48 and p.regime.bytes_per_token == 0 and p.fits and p.margin > 0.08


def test_no_layer_is_kept_when_the_free_memory_is_less_than_one_layer():
    device = gpu_device(memory_gib=(_rollout_others30() + 2 * GiB) / 0.9 / GiB)  # 2 GiB free < one bf16 layer x 2
    p = _plan30(device=device)
    assert p.regime.kept == 1
    device = gpu_device(memory_gib=(_rollout_others30() + 1 * GiB) / 0.9 / GiB)  # < one bf16 layer (1.16 GiB)
    p = _plan30(device=device)
    assert p.regime.kept == 0 and "kept layers (generation)" not in p.phases["rollout"]
    assert p.regime.describe().startswith("rollout regime: none of 48 decoder layers kept gathered; 48 layers")


def test_a_gpu_with_room_keeps_every_layer_gathered():
    cfg = _cfg()
    p = plan_phases(cfg, _config("Qwen3-VL-8B-Instruct"), strategy="fsdp2", processes=8, device=gpu_device())
    assert p.regime.kept == 36 and p.regime.bytes_per_token == 0
    assert p.phases["rollout"]["kept layers (generation)"] == 36 * 192_946_432 * 2
    assert p.regime.describe().startswith("rollout regime: every layer kept gathered (36 decoder layers)")


def test_load_is_the_sharded_weights_and_one_full_bf16_tensor_of_the_largest_parameter():
    largest = 128 * 1536 * 2048  # one layer's experts' fused gate-up projection
    load = _plan30().phases["load"]
    assert load == {"CUDA context + NCCL": RESERVE, "weights": (T30 + V30) * 4 / 8, "load transient": largest * 2,
                    "fragmentation": pytest.approx(0.1 * largest * 2)}


def test_checkpoint_holds_weights_and_optimizer_and_stages_one_shard_at_a_time_on_the_host():
    p = _plan30()
    assert p.phases["checkpoint"] == {"CUDA context + NCCL": RESERVE, "weights": (T30 + V30) * 4 / 8,
                                      "optimizer (AdamW)": 2 * T30 * 4 / 8}
    assert p.host_staging == 128 * 1536 * 2048 * 4 / 8  # the largest parameter's fp32 shard


def test_resume_holds_weights_optimizer_and_the_zero_gradients_adamw_state_initialisation_allocates():
    p = _plan30()
    resume = p.phases["resume"]
    assert resume["gradients"] == T30 * 4 / 8 and resume["optimizer (AdamW)"] == 2 * T30 * 4 / 8
    assert resume["load transient"] == 128 * 1536 * 2048 * 4 / 8


def test_the_peak_is_the_largest_phase_and_the_margin_its_share_of_the_capacity():
    h, q, kv, e, k, im, tokens = 2048, 4096, 512, 128, 8, 768, 8192
    per_layer = (2 * h + 3 * q + 3 * kv) + 2 * h + e + k * (2 * h + 4 * im)  # MoE layer, kept for its backward
    act = tokens * (48 * h + per_layer) * 2 + 2 * 1024 * 151936 * 4 + 151936 * 2048 * 4  # checkpointed, LM head
    rs, aux = LAYER30 * 6 + LAYER30 * 4 / 8, 48 * tokens * (3 * e * 4 + k * 8)
    update = (RESERVE + (T30 + V30) * 4 / 8 + 3 * T30 * 4 / 8 + (ROOT30 + 2 * LAYER30) * 2
              + 1.1 * (act + rs + aux))  # weights; gradients and AdamW; gathered; dynamic terms + 10%
    p = _plan30()
    assert p.peak_phase == "update" and p.peak == pytest.approx(update)
    assert p.margin == pytest.approx((H100 - update) / H100)
    assert verdict(p) == (True, "fits: peak 72.7 GiB per GPU (update) of 79.2 GiB, margin 8.2%; largest term "
                                "optimizer (AdamW) (28.4 GiB)")


def test_one_cpu_process_holds_everything_unsharded_in_fp32_with_no_reserve():
    cfg = _cfg("recipes/tiny/demo.yaml")
    config = model_config(cfg, None)[0]
    total, vocab = 373_536, config["text_config"]["vocab_size"]
    p = plan_phases(cfg, config, strategy="fsdp2", processes=1, device=cpu_device(1, memory_gib=8))
    assert p.strategy == "single" and not p.regime.sharded and p.device.capacity == 8 * GiB
    sizes = model_sizes(config, False)
    assert p.phases["update"] == {"weights": total * 4, "gradients": total * 4, "optimizer (AdamW)": 2 * total * 4,
                                  "activations": activation_bytes(cfg, sizes, False, 4)}  # no gathering, no buckets
    kv = 64 * (2048 + 4) * (2 * 2 * 2 * 16 * 4)  # 64 sequences of prompt + completion, K and V of 2 layers, fp32
    assert p.phases["rollout"] == {"weights": total * 4, "optimizer (AdamW)": 2 * total * 4, "rollout KV cache": kv,
                                   "decoding logits": 64 * vocab * 4}


def test_two_cpu_processes_shard_the_state_and_keep_every_layer_gathered_in_fp32():
    cfg = _cfg("recipes/tiny/demo.yaml")
    config = model_config(cfg, None)[0]
    total, layer = 373_536, _layer(64, 4, 2, 16, experts=8, moe_inter=32)
    root = total - 2 * layer - 2 * _block(32, 64)
    p = plan_phases(cfg, config, strategy="fsdp2", processes=2, device=cpu_device(2, memory_gib=8))
    assert p.device.capacity == 4 * GiB and p.regime.kept == 2 and p.regime.bytes_per_token == 0
    rollout, update = p.phases["rollout"], p.phases["update"]
    assert rollout["weights"] == total * 4 / 2 and rollout["optimizer (AdamW)"] == 2 * total * 4 / 2
    assert rollout["gathered units"] == update["gathered units"] == (root + 2 * layer) * 4
    assert rollout["kept layers (generation)"] == 2 * layer * 4
    assert update["reduce-scatter buffers"] == layer * (4 + 4) + layer * 4 / 2
    assert "CUDA context + NCCL" not in update and "fragmentation" not in update


def test_ddp_keeps_everything_on_every_gpu_plus_buckets_and_autocast_copies():
    cfg = _cfg()
    sizes = model_sizes(_config("Qwen3-VL-8B-Instruct"), cfg.model.freeze_vision)
    p = plan_phases(cfg, _config("Qwen3-VL-8B-Instruct"), strategy="ddp", processes=8, device=gpu_device())
    update = p.phases["update"]
    assert update["weights"] == sizes.total * 4 and update["gradients"] == update["DDP gradient buckets"]
    assert update["DDP gradient buckets"] == sizes.trainable * 4 and update["bf16 autocast copies"] == sizes.total * 2
    assert "gathered units" not in update and not p.regime.sharded
    assert p.phases["rollout"]["rollout KV cache"] == 32 * 4096 * (2 * 36 * 8 * 128 * 4)  # fp32: outside autocast


def test_activations_with_and_without_gradient_checkpointing_by_hand():
    cfg = _cfg()
    sizes = model_sizes(_config("Qwen3-VL-8B-Instruct"), cfg.model.freeze_vision)
    h, q, kv, inter, layers, vocab, tokens = 4096, 4096, 1024, 12288, 36, 151936, 16384
    per_layer = (2 * h + 3 * q + 3 * kv) + (2 * h + 3 * inter)  # elements per token kept for the backward
    head = 2 * 1024 * vocab * 4 + vocab * h * 4  # two fp32 (chunk, vocab) buffers, the head's fp32 gradient
    assert activation_bytes(cfg, sizes, True) == tokens * (layers * h + per_layer) * 2 + head
    assert activation_bytes(cfg, sizes, False) == tokens * (layers * per_layer + h) * 2 + head
    assert activation_bytes(cfg, sizes, True, 4) == tokens * (layers * h + per_layer) * 4 + head  # fp32 compute
    assert round(activation_bytes(cfg, sizes, True) / GiB, 2) == 10.07


def test_rollout_kv_cache_by_hand():
    cfg = _cfg()
    sizes = model_sizes(_config("Qwen3-VL-8B-Instruct"), True)
    per_token = 2 * 36 * 8 * 128 * 2  # keys and values, 36 layers, 8 KV heads of 128, bf16
    assert kv_bytes_per_token(sizes.text, 2) == per_token
    at_once = 32 * (2048 + 2048) * per_token  # rollout.generation_batch_size sequences of prompt + completion
    p = plan_phases(cfg, _config("Qwen3-VL-8B-Instruct"), strategy="fsdp2", processes=8, device=gpu_device())
    assert p.phases["rollout"]["rollout KV cache"] == at_once == 18 * GiB


def test_train_warns_only_when_the_run_will_not_fit():
    cfg = _cfg()
    assert oom_warning(cfg, _config("Qwen3-VL-8B-Instruct"), "fsdp2", 8, 80 * GiB) is None
    warning = oom_warning(cfg, _config("Qwen3-VL-8B-Instruct"), "single", 1, 80 * GiB)
    assert warning.startswith("warning: this run likely runs out of GPU memory (does NOT fit")


def test_the_launch_comes_from_the_accelerate_config_or_the_recipe_and_deepspeed_is_refused(tmp_path):
    cfg = _cfg()
    assert launch(str(REPO / "recipes/accelerate/fsdp2.yaml"), cfg) == ("fsdp2", 8)
    assert launch(str(REPO / "recipes/accelerate/ddp.yaml"), cfg) == ("ddp", 8)
    assert launch(None, cfg) == ("fsdp2", None)  # train.sharding: fsdp2
    assert launch(None, _cfg("recipes/tiny/demo.yaml")) == ("ddp", None)
    (tmp_path / "ds.yaml").write_text("distributed_type: DEEPSPEED\nnum_processes: 8\n")
    with pytest.raises(UserError, match="DeepSpeed is refused"):
        launch(str(tmp_path / "ds.yaml"), cfg)


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


def test_plan_prints_the_phase_table_and_regime_and_exits_1_when_the_run_does_not_fit(capsys):
    from sapo_vl.cli import main

    code = main(["plan", str(REPO / "recipes/qwen3_vl_30b_a3b/geo3k.yaml"), "--gpus", "2"])
    out = capsys.readouterr().out
    assert code == 1 and "FSDP2 on 2 GPU(s) of 79.2 GiB (h100)" in out
    assert "31.1 B total, 30.5 B trainable (vision tower frozen), 3.89 B active per token (MoE)" in out
    assert "load    rollout     update checkpoint" in out and "  reduce-scatter buffers" in out
    assert "rollout KV cache: 128 sequences x 4,096 tokens = 48.0 GiB per step; 32 at a time" in out
    assert "rollout regime: " in out
    assert out.strip().splitlines()[-1].startswith("verdict under FSDP2: does NOT fit")


def test_overrides_may_follow_the_options_and_pure_bf16_fits_the_30b_on_8_h100(capsys):
    from sapo_vl.cli import main

    recipe = str(REPO / "recipes/qwen3_vl_30b_a3b/geo3k.yaml")
    assert main(["plan", recipe, "--gpus", "8", "model.dtype=bfloat16"]) == 0
    assert "weights, gradients and AdamW moments 16-bit (model.dtype=bfloat16)" in capsys.readouterr().out


def test_plan_of_the_tiny_demo_needs_no_download_on_a_gpu_or_on_cpu_processes(capsys):
    from sapo_vl.cli import main

    assert main(["plan", str(REPO / "recipes/tiny/demo.yaml"), "--gpus", "1", "--gpu-memory", "4"]) == 0
    out = capsys.readouterr().out
    assert "model config the tiny model; one process on 1 GPU(s) of 4.0 GiB (custom)" in out and "374 K total" in out
    fsdp2 = str(REPO / "recipes/accelerate/fsdp2.yaml")
    assert main(["plan", str(REPO / "recipes/tiny/demo.yaml"), "--cpu", "--processes", "2", "--memory", "8",
                 "--accelerate-config", fsdp2]) == 0
    out = capsys.readouterr().out
    assert "FSDP2 on 2 CPU process(es) of 4.0 GiB each" in out and "per process (MiB), FSDP2 x 2" in out
    assert "rollout regime: every layer kept gathered (2 decoder layers)" in out
