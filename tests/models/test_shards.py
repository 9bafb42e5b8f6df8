"""Loading by rows (sapo_vl.models.shards): the tensors from_pretrained gives, converted as transformers converts the
published checkpoints, each in memory of its own, and clear errors for a checkpoint that does not fit the model.
(Sharded, on 2 processes: tests/test_fsdp.py.)"""

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageTextToText

from sapo_vl.errors import UserError
from sapo_vl.models.load import load_policy
from sapo_vl.models.shards import UnsupportedConversion, empty_model, load_safetensors, materialize, units


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name, value in sa.items():
        assert torch.equal(value, sb[name]), name


@pytest.fixture(scope="module")
def published_moe(tmp_path_factory):
    """A tiny Qwen3-VL-MoE whose experts are stored as the published checkpoints store them, (E, hidden, 2 x I) and
    (E, I, hidden), transposed from transformers' runtime layout (save_pretrained keeps the runtime one)."""
    from sapo_vl.models.tiny import TinyConfig, make_tiny_model

    path = make_tiny_model(tmp_path_factory.mktemp("published"), TinyConfig(moe_intermediate_size=48))
    tensors = load_file(path / "model.safetensors")
    experts = [k for k in tensors if k.endswith(("experts.gate_up_proj", "experts.down_proj"))]
    assert experts
    for key in experts:
        tensors[key] = tensors[key].transpose(1, 2).contiguous()
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    return path


def test_one_process_loads_the_weights_from_pretrained_gives(tiny_dir):
    ours, _ = load_policy(tiny_dir)
    _same_weights(ours, AutoModelForImageTextToText.from_pretrained(tiny_dir))


def test_a_tied_lm_head_stays_tied(tmp_path):
    from sapo_vl.models.tiny import TinyConfig, make_tiny_model

    model, _ = load_policy(make_tiny_model(tmp_path / "dense", TinyConfig(moe=False, tie_word_embeddings=True)))
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight


def test_experts_stored_as_published_are_transposed_into_the_runtime_layout(published_moe):
    ours, _ = load_policy(published_moe)
    reference = AutoModelForImageTextToText.from_pretrained(published_moe)
    assert tuple(reference.model.language_model.layers[0].mlp.experts.down_proj.shape) == (8, 64, 48)
    _same_weights(ours, reference)


def test_every_weight_gets_memory_of_its_own_aligned_as_torch_allocates_it(tiny_dir):
    """from_pretrained leaves CPU weights of the file's dtype as views into the memory-mapped file, at addresses
    that are not 64-byte aligned: float rounding then differed from a resumed run's, whose weights are allocated."""
    ours, _ = load_policy(tiny_dir)
    assert all(p.data_ptr() % 64 == 0 for p in ours.parameters())


def test_a_conversion_row_loading_cannot_apply_falls_back_to_from_pretrained(tiny_dir, monkeypatch):
    import sapo_vl.models.load as load

    def refuse(model, path):
        raise UnsupportedConversion("a many-to-one conversion")

    monkeypatch.setattr(load, "load_safetensors", refuse)
    ours, _ = load_policy(tiny_dir)
    _same_weights(ours, AutoModelForImageTextToText.from_pretrained(tiny_dir))
    assert all(p.data_ptr() % 64 == 0 for p in ours.parameters())  # copied out of the mapped file


def test_a_many_to_one_conversion_is_refused_by_name(tmp_path):
    from transformers.core_model_loading import Concatenate, WeightConverter

    from sapo_vl.models.shards import KeyMap
    from sapo_vl.models.tiny import TinyConfig, make_tiny_model

    model = empty_model(make_tiny_model(tmp_path / "dense", TinyConfig(moe=False)), {})
    keymap = KeyMap(model, dict(model.named_parameters()))
    keymap.converters = [WeightConverter(source_patterns=["mlp.gate_proj", "mlp.up_proj"],
                                         target_patterns="mlp.gate_up_proj", operations=[Concatenate(dim=0)])]
    with pytest.raises(UnsupportedConversion, match="layers.0.mlp.gate_proj.weight.*Concatenate"):
        keymap("model.language_model.layers.0.mlp.gate_proj.weight", [128, 64])


def test_a_checkpoint_of_another_model_is_named_by_its_tensors(tiny_dir, tmp_path):
    from sapo_vl.models.tiny import TinyConfig, make_tiny_model

    other = make_tiny_model(tmp_path / "dense", TinyConfig(moe=False))
    model = empty_model(tiny_dir, {})  # the MoE's architecture, the dense model's weights
    materialize(model, "cpu")
    with pytest.raises(UserError, match=r"does not match the model built from its config.json: \d+ missing .* "
                                        r"\d+ unexpected"):
        load_safetensors(model, other)


def test_tensors_group_by_wrap_unit_in_order():
    names = ["model.visual.patch_embed.proj.weight", "model.visual.blocks.0.attn.qkv.weight",
             "model.visual.blocks.0.norm1.weight", "model.language_model.layers.1.mlp.gate.weight",
             "model.language_model.layers.1.input_layernorm.weight", "model.language_model.layers.10.mlp.gate.weight",
             "lm_head.weight"]
    assert units(names) == [[names[0]], names[1:3], names[3:5], [names[5]], [names[6]]]
