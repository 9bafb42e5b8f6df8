"""Fixtures for the data-layer tests: the committed tiny fixture and a few raw image forms."""

import io
from pathlib import Path

import pytest
from PIL import Image

FIXTURES = Path(__file__).resolve().parents[2] / "data" / "fixtures"


@pytest.fixture
def fixture_dir() -> Path:
    return FIXTURES


@pytest.fixture
def fixture_jsonl() -> Path:
    return FIXTURES / "tiny_vqa.jsonl"


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def pixels(image: Image.Image) -> tuple:
    return image.mode, image.size, image.tobytes()


@pytest.fixture
def red_square() -> Image.Image:
    with Image.open(FIXTURES / "images" / "red_square.png") as img:
        return img.convert("RGB")
