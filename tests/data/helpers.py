"""Helpers shared by the data-layer tests (imported relatively: ``from .helpers import pixels``)."""

import io
from pathlib import Path

from PIL import Image

FIXTURES = Path(__file__).resolve().parents[2] / "data" / "fixtures"


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def pixels(image: Image.Image) -> tuple:
    """A comparable fingerprint of an image: mode, size and raw pixel bytes."""
    return image.mode, image.size, image.tobytes()
