"""Decode every image form a dataset row may hold into an RGB ``PIL.Image.Image``.

Accepted forms (one image, or a list/tuple of them):
- a file path (``str`` or ``os.PathLike``; relative paths resolve against ``base_dir``, the data file's folder;
  a ``file://`` prefix is allowed),
- a ``PIL.Image.Image``,
- raw encoded bytes (``bytes`` / ``bytearray`` / ``memoryview``),
- a dict ``{"bytes": ..., "path": ...}`` (the Hugging Face ``datasets.Image`` storage layout; bytes win when both
  are present),
- a base64 data URI (``"data:image/png;base64,..."``),
- a ``numpy`` array of shape (H, W), (H, W, 3) or (H, W, 4) with dtype uint8.

Images with an alpha channel are composited onto white, as qwen-vl-utils' ``fetch_image`` does, so the pixels a
model sees do not depend on which loader decoded the file.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["ImageDecodeError", "decode_image", "decode_images", "resolve_image", "to_rgb"]

MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"
MAX_IMAGE_BYTES = int(os.environ.get("SAPO_VL_MAX_IMAGE_MB", "256")) * 2**20  # larger files are refused unread


class ImageDecodeError(ValueError):
    """An image value could not be turned into a PIL image.

    ``reason`` is ``"missing_image"`` (no file, empty value) or ``"corrupt_image"`` (undecodable bytes, bad
    data URI, unsupported type).
    """

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def to_rgb(image: Image.Image) -> Image.Image:
    """Return an RGB copy of ``image``; transparent pixels become white (qwen-vl-utils convention)."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def _open(source: bytes | Path, origin: str) -> Image.Image:
    """Decode encoded bytes, or a file without reading it whole first (a large non-image fails on its header)."""
    if isinstance(source, bytes) and len(source) == 0:
        raise ImageDecodeError(MISSING_IMAGE, f"empty image bytes ({origin})")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            img.load()  # force a full decode so truncated files fail here, not in the processor
            return to_rgb(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(CORRUPT_IMAGE, f"cannot decode image ({origin}): {exc}") from exc


def _decode_data_uri(uri: str) -> Image.Image:
    header, sep, payload = uri.partition(",")
    if not sep or not header.endswith(";base64"):
        raise ImageDecodeError(
            CORRUPT_IMAGE, f"malformed data URI {uri[:40]!r}...: expected 'data:image/<fmt>;base64,<payload>'"
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageDecodeError(CORRUPT_IMAGE, f"data URI payload is not valid base64: {exc}") from exc
    return _open(data, "data URI")


def _resolve_path(value: str | os.PathLike, base_dir: str | os.PathLike | None) -> Path:
    text = os.fspath(value)
    if text.startswith(("http://", "https://")):
        raise ImageDecodeError(
            MISSING_IMAGE, f"remote image URL {text!r} is not fetched by the loader; download it and use a path"
        )
    if not text.strip():
        raise ImageDecodeError(MISSING_IMAGE, "empty image path")
    path = Path(text.removeprefix("file://")).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.exists():
        where = ""
        if not Path(text).is_absolute():
            where = f" ({text!r} resolved against {base_dir if base_dir is not None else 'the working directory'})"
        raise ImageDecodeError(MISSING_IMAGE, f"image file not found: {path.absolute()}{where}")
    if not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file (a FIFO, socket or device)"
        raise ImageDecodeError(CORRUPT_IMAGE, f"image path {path.absolute()} is {kind}; expected an image file")
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise ImageDecodeError(CORRUPT_IMAGE, f"image file {path.absolute()} is {size / 2**20:.0f} MB; expected at "
                               f"most {MAX_IMAGE_BYTES / 2**20:.0f} MB (SAPO_VL_MAX_IMAGE_MB)")
    return path.absolute()


def _decode_array(value: Any) -> Image.Image:
    arr = np.asarray(value)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ImageDecodeError(
            CORRUPT_IMAGE,
            f"numpy image must be uint8 with shape (H, W), (H, W, 3) or (H, W, 4); got {arr.dtype} {arr.shape}",
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return to_rgb(Image.fromarray(arr))


def resolve_image(value: Any, base_dir: str | os.PathLike | None = None) -> Any:
    """Check one image value without decoding it: a path becomes an absolute ``Path`` to an existing file, HF's
    ``{bytes, path}`` becomes its bytes or path, bytes must be non-empty; PIL images, data URIs and numpy arrays
    pass. ``decode_image`` of the result gives the image. Raises ``ImageDecodeError`` like ``decode_image``."""
    if isinstance(value, Image.Image) or type(value).__module__ == "numpy":
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) == 0:
            raise ImageDecodeError(MISSING_IMAGE, "empty image bytes")
        if len(value) > MAX_IMAGE_BYTES:
            raise ImageDecodeError(CORRUPT_IMAGE, f"{len(value) / 2**20:.0f} MB of image bytes; expected at most "
                                   f"{MAX_IMAGE_BYTES / 2**20:.0f} MB (SAPO_VL_MAX_IMAGE_MB)")
        return bytes(value)
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data is not None:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise ImageDecodeError(CORRUPT_IMAGE, f"image dict 'bytes' must be bytes, got {type(data).__name__}")
            return resolve_image(data)
        if path and not isinstance(path, (str, os.PathLike)):
            raise ImageDecodeError(CORRUPT_IMAGE, f"image dict 'path' must be a str, got {type(path).__name__}")
        if path:
            return _resolve_path(path, base_dir)
        raise ImageDecodeError(MISSING_IMAGE, "image dict has neither 'bytes' nor 'path'")
    if isinstance(value, str) and value.startswith("data:"):
        return value
    if isinstance(value, (str, os.PathLike)):
        return _resolve_path(value, base_dir)
    if value is None:
        raise ImageDecodeError(MISSING_IMAGE, "image is None")
    raise ImageDecodeError(
        CORRUPT_IMAGE,
        f"unsupported image type {type(value).__name__}; expected a path, PIL image, bytes, "
        "{'bytes','path'} dict, data URI or uint8 numpy array",
    )


def decode_image(value: Any, base_dir: str | os.PathLike | None = None) -> Image.Image:
    """Decode one image value (any accepted form) into an RGB PIL image.

    Raises ``ImageDecodeError`` with ``reason`` "missing_image" or "corrupt_image" and a message saying what was
    expected.
    """
    value = resolve_image(value, base_dir)
    if isinstance(value, Image.Image):
        try:
            return to_rgb(value)
        except (OSError, ValueError) as exc:
            raise ImageDecodeError(CORRUPT_IMAGE, f"cannot convert PIL image to RGB: {exc}") from exc
    if isinstance(value, (bytes, Path)):
        return _open(value, "raw bytes" if isinstance(value, bytes) else str(value))
    if isinstance(value, str):
        return _decode_data_uri(value)
    return _decode_array(value)


def as_image_list(value: Any) -> list[Any]:
    """Normalise the raw images column to a list of raw values: None -> [], one image -> [image]."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if type(value).__module__ == "numpy" and getattr(value, "dtype", None) is not None and value.dtype == object:
        return list(value)
    return [value]


def decode_images(value: Any, base_dir: str | os.PathLike | None = None) -> list[Image.Image]:
    """Decode a raw images value (None, one image, or a list) into a list of RGB PIL images."""
    return [decode_image(v, base_dir) for v in as_image_list(value)]
