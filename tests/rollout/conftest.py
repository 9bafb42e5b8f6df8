import pytest

from sapo_vl.models.load import load_policy, load_processor


@pytest.fixture(scope="module")
def processor(tiny_dir):
    return load_processor(tiny_dir)


@pytest.fixture
def policy(tiny_dir):
    """(model, processor) freshly loaded from the tiny checkpoint (tests may change the weights)."""
    return load_policy(tiny_dir)
