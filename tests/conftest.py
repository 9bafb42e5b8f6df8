"""Shared test setup: offline Hugging Face, deterministic CPU threads, GPU marker handling."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("SAPO_VL_CACHE_DIR", tempfile.mkdtemp(prefix="sapo-vl-test-cache-"))  # not the user's cache

import pytest  # noqa: E402
import torch  # noqa: E402

import sapo_vl  # noqa: E402,F401  (makes torchvision importable on CPU before transformers)

# One intra-op thread: deterministic CPU numerics, and no oversubscription when tests start subprocesses.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """The offline tiny Qwen3-VL-MoE checkpoint (sapo_vl.models.tiny, seed 0), built once per test session."""
    from sapo_vl.models.tiny import TinyConfig, make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_moe"), TinyConfig(seed=0))


@pytest.fixture
def register(monkeypatch):
    """Register a reward function for one test only: ``register(name, fn)``."""
    from sapo_vl.rewards import REWARDS

    def add(name, fn):
        monkeypatch.setitem(REWARDS, name, fn)
        return name
    return add
