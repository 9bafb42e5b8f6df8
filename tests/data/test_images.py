"""Every accepted image form decodes to the same RGB PIL image; bad values fail with a reason."""

import base64

import numpy as np
import pytest
from PIL import Image

from sapo_vl.data.images import ImageDecodeError, decode_image, decode_images

from .helpers import pixels, png_bytes


def _forms(fixture_dir, red_square):
    path = fixture_dir / "images" / "red_square.png"
    data = png_bytes(red_square)
    return {
        "abs_path_str": str(path),
        "pathlike": path,
        "file_uri": "file://" + str(path),
        "pil": red_square,
        "pil_palette": red_square.convert("P", palette=Image.Palette.ADAPTIVE),
        "bytes": data,
        "bytearray": bytearray(data),
        "memoryview": memoryview(data),
        "hf_dict_bytes": {"bytes": data, "path": "ignored.png"},
        "hf_dict_path": {"bytes": None, "path": str(path)},
        "data_uri": "data:image/png;base64," + base64.b64encode(data).decode(),
        "numpy": np.asarray(red_square),
    }


def test_every_image_form_decodes_to_identical_rgb(fixture_dir, red_square):
    expected = pixels(red_square)
    for name, value in _forms(fixture_dir, red_square).items():
        out = decode_image(value)
        assert pixels(out) == expected, name


def test_relative_path_resolves_against_base_dir(fixture_dir, red_square, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the cwd must not matter
    out = decode_image("images/red_square.png", base_dir=fixture_dir)
    assert pixels(out) == pixels(red_square)


def test_relative_path_in_hf_dict_resolves_against_base_dir(fixture_dir, red_square):
    out = decode_image({"bytes": None, "path": "images/red_square.png"}, base_dir=fixture_dir)
    assert pixels(out) == pixels(red_square)


def test_rgba_transparency_becomes_white():
    img = Image.new("RGBA", (32, 32), (10, 20, 30, 0))
    img.putpixel((0, 0), (200, 0, 0, 255))
    out = decode_image(png_bytes(img))
    assert out.mode == "RGB"
    assert out.getpixel((5, 5)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == (200, 0, 0)


def test_grayscale_is_converted_to_rgb():
    out = decode_image(Image.new("L", (32, 32), 77))
    assert out.mode == "RGB" and out.getpixel((3, 3)) == (77, 77, 77)


def test_single_image_and_none_become_lists(red_square):
    assert len(decode_images(red_square)) == 1
    assert decode_images(None) == []
    assert len(decode_images([red_square, red_square])) == 2


@pytest.mark.parametrize(
    ("value", "reason", "needle"),
    [
        ("no/such/file.png", "missing_image", "not found"),
        ({"bytes": None, "path": None}, "missing_image", "neither"),
        (b"not a png at all", "corrupt_image", "cannot decode"),
        (b"", "missing_image", "empty"),
        ("data:image/png;base64,@@@", "corrupt_image", "base64"),
        ("data:image/png,abc", "corrupt_image", "malformed data URI"),
        ("https://example.com/a.png", "missing_image", "remote"),
        (12345, "corrupt_image", "unsupported image type int"),
        (np.zeros((4, 4), dtype=np.float32), "corrupt_image", "uint8"),
    ],
)
def test_bad_image_values_raise_with_reason(value, reason, needle, fixture_dir):
    with pytest.raises(ImageDecodeError) as info:
        decode_image(value, base_dir=fixture_dir)
    assert info.value.reason == reason
    assert needle in str(info.value)


def test_truncated_png_is_corrupt(red_square):
    data = png_bytes(red_square)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data[: len(data) // 2])
    assert info.value.reason == "corrupt_image"
