import pytest

from sapo_vl.models.tiny import TinyConfig, make_tiny_model


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """The offline tiny Qwen3-VL-MoE checkpoint, built once per test session."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny_moe"), TinyConfig(seed=0))
