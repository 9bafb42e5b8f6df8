"""Fixtures for the data-layer tests: the committed tiny fixture and its red square."""

from pathlib import Path

import pytest
from PIL import Image

from .helpers import FIXTURES


@pytest.fixture
def fixture_dir() -> Path:
    return FIXTURES


@pytest.fixture
def fixture_jsonl() -> Path:
    return FIXTURES / "tiny_vqa.jsonl"


@pytest.fixture
def red_square() -> Image.Image:
    with Image.open(FIXTURES / "images" / "red_square.png") as img:
        return img.convert("RGB")
