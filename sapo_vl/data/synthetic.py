"""``synthetic_shapes``: one coloured shape on a plain background, drawn with PIL, deterministic by seed; and
``synthetic_shapes_colors``: a grid of shapes whose answer names every colour in reading order (17+ tokens).

The demo task: a random-init tiny model learns to name the colour (default: 3 colours, one question, 32x32
images, no jitter) from scratch. Harder variants are one argument away: more colours, several shapes and the
"What shape is this?" question, size / position jitter and pixel noise.

Answers are balanced by construction: within each question type, the asked attribute cycles through its values
(counts differ by at most one) before a seeded shuffle. Train and test draw from different seeded streams.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from sapo_vl.data.records import LoadReport, Records, render_template
from sapo_vl.errors import DataError

__all__ = ["COLORS", "QUESTIONS", "SHAPES", "ShapesConfig", "build_synthetic_shapes", "build_synthetic_shapes_colors",
           "draw_shape"]

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 200, 30),
    "purple": (140, 60, 180),
    "orange": (245, 130, 30),
    "cyan": (40, 200, 210),
    "pink": (245, 120, 180),
    "brown": (130, 80, 40),
    "gray": (128, 128, 128),
    "black": (20, 20, 20),
    "white": (250, 250, 250),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
QUESTIONS = {"color": "What color is the shape?", "shape": "What shape is this?"}
DEFAULT_SIZES = {"train": 1000}
DEFAULT_EVAL_SIZE = 200
MIN_IMAGE_SIZE = 32  # Qwen-VL processors with patch 16 and 2x2 merging need at least 32x32


@dataclass(frozen=True)
class ShapesConfig:
    """Task knobs. ``colors`` / ``shapes`` default to the first ``num_colors`` / ``num_shapes`` of the palettes."""

    n: int = 1000
    num_colors: int = 3
    colors: tuple[str, ...] | None = None
    num_shapes: int = 1
    shapes: tuple[str, ...] | None = None
    questions: tuple[str, ...] = ("color",)
    image_size: int = 32
    shape_scale: float = 0.6  # shape extent as a fraction of the image side
    scale_jitter: float = 0.0  # relative +- variation of the extent
    position_jitter: float = 0.0  # fraction of the free margin the centre may move
    noise: float = 0.0  # std of Gaussian pixel noise, in 0..255 units
    background: str = "white"
    prompt_template: str | None = None  # e.g. "{prompt} Answer with one word."
    seed: int = 0

    def color_names(self) -> tuple[str, ...]:
        return tuple(self.colors) if self.colors is not None else tuple(list(COLORS)[: self.num_colors])

    def shape_names(self) -> tuple[str, ...]:
        return tuple(self.shapes) if self.shapes is not None else SHAPES[: self.num_shapes]

    def validate(self) -> None:
        colors, shapes = self.color_names(), self.shape_names()
        unknown = [c for c in (*colors, self.background) if c not in COLORS]
        if unknown:
            raise DataError(f"unknown colour(s) {unknown}; known: {sorted(COLORS)}")
        bad_shapes = [s for s in shapes if s not in SHAPES]
        if bad_shapes:
            raise DataError(f"unknown shape(s) {bad_shapes}; known: {list(SHAPES)}")
        if not colors or not shapes or len(set(colors)) != len(colors) or len(set(shapes)) != len(shapes):
            raise DataError(f"need >= 1 distinct colour and shape, got colors={colors}, shapes={shapes}")
        if self.background in colors:
            raise DataError(f"background {self.background!r} is also a shape colour; pick another background")
        bad_q = [q for q in self.questions if q not in QUESTIONS]
        if not self.questions or bad_q:
            raise DataError(f"questions must be a non-empty subset of {list(QUESTIONS)}, got {self.questions}")
        if "shape" in self.questions and len(shapes) < 2:
            raise DataError("the 'shape' question needs at least 2 shapes (set num_shapes or shapes)")
        if self.image_size < MIN_IMAGE_SIZE:
            raise DataError(f"image_size must be >= {MIN_IMAGE_SIZE}, got {self.image_size}")
        if self.n < 1:
            raise DataError(f"n must be >= 1, got {self.n}")
        if not 0.1 <= self.shape_scale <= 1.0 or not 0 <= self.scale_jitter < 1 or not 0 <= self.position_jitter <= 1:
            raise DataError("need 0.1 <= shape_scale <= 1, 0 <= scale_jitter < 1, 0 <= position_jitter <= 1")
        if self.noise < 0:
            raise DataError(f"noise must be >= 0, got {self.noise}")


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "cross":
        t = r / 3
        return [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t), (cx + r, cy + t),
                (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r), (cx - t, cy + t), (cx - r, cy + t),
                (cx - r, cy - t), (cx - t, cy - t)]
    raise DataError(f"unknown shape {shape!r}; known: {list(SHAPES)}")


def draw_shape(shape: str, color: str, cfg: ShapesConfig, rng: np.random.Generator) -> Image.Image:
    """Draw one image; jitter and noise come from ``rng`` (nothing else is random)."""
    size = cfg.image_size
    half = size * cfg.shape_scale / 2 * (1 + cfg.scale_jitter * rng.uniform(-1, 1))
    margin = max(size / 2 - half, 0.0)
    cx, cy = size / 2 + cfg.position_jitter * margin * rng.uniform(-1, 1, size=2)
    image = Image.new("RGB", (size, size), COLORS[cfg.background])
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse([cx - half, cy - half, cx + half, cy + half], fill=COLORS[color])
    else:
        draw.polygon(_polygon(shape, cx, cy, half), fill=COLORS[color])
    if cfg.noise > 0:
        pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, cfg.noise, size=(size, size, 3))
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    return image


def _split_rng(seed: int, split: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(split.encode("utf-8"))])


def _balanced(values: tuple[str, ...], count: int, rng: np.random.Generator) -> list[str]:
    cycle = [values[j % len(values)] for j in range(count)]
    return [cycle[j] for j in rng.permutation(count)]


def _plan(cfg: ShapesConfig, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """(question, colour, shape) per record: questions round-robin, the asked attribute balanced per question."""
    colors, shapes = cfg.color_names(), cfg.shape_names()
    questions = [cfg.questions[i % len(cfg.questions)] for i in range(cfg.n)]
    asked = {q: iter(_balanced(colors if q == "color" else shapes, questions.count(q), rng))
             for q in cfg.questions}
    plan = []
    for q in questions:
        value = next(asked[q])
        if q == "color":
            plan.append((q, value, shapes[int(rng.integers(len(shapes)))]))
        else:
            plan.append((q, colors[int(rng.integers(len(colors)))], value))
    return plan


def _shapes_config(name: str, split: str, n: int | None, options: dict, known: set[str]) -> ShapesConfig:
    """The validated ``ShapesConfig`` of ``options`` (``known``: the option names the dataset takes)."""
    unknown = sorted(set(options) - known)
    if unknown:
        raise DataError(f"{name} got unknown option(s) {unknown}; known: {sorted(known | {'n'})}")
    for key in ("colors", "shapes", "questions"):
        if isinstance(options.get(key), str):
            options[key] = (options[key],)
        elif options.get(key) is not None:
            options[key] = tuple(options[key])
    cfg = ShapesConfig(n=n if n is not None else DEFAULT_SIZES.get(split, DEFAULT_EVAL_SIZE), **options)
    cfg.validate()
    return cfg


def build_synthetic_shapes(split: str = "train", *, n: int | None = None, **options) -> Records:
    """Build the ``synthetic_shapes`` records for ``split`` (options: the ``ShapesConfig`` fields).

    ``n`` defaults to 1000 for "train" and 200 for other splits. Each record has reward "vqa" and meta
    ``{"question_type", "color", "shape"}``; ids are ``synthetic_shapes-<split>-<i>``.
    """
    cfg = _shapes_config("synthetic_shapes", split, n, options, set(ShapesConfig.__dataclass_fields__) - {"n"})
    rng = _split_rng(cfg.seed, split)
    records = []
    for i, (question, color, shape) in enumerate(_plan(cfg, rng)):
        prompt = QUESTIONS[question]
        if cfg.prompt_template is not None:
            prompt = render_template(cfg.prompt_template, {"prompt": prompt})
        records.append({
            "id": f"synthetic_shapes-{split}-{i}",
            "prompt": prompt,
            "images": [draw_shape(shape, color, cfg, rng)],
            "answer": color if question == "color" else shape,
            "reward": "vqa",
            "meta": {"question_type": question, "color": color, "shape": shape},
        })
    n = len(records)
    return Records(records, LoadReport(source=f"synthetic_shapes[{split}]", total=n, seen=n, kept=n))


COLORS_QUESTION = "Name the color of every shape, left to right, top to bottom."


def build_synthetic_shapes_colors(split: str = "train", *, n: int | None = None, count: int = 9, columns: int = 3,
                                  **options) -> Records:
    """Build the ``synthetic_shapes_colors`` records: ``count`` shapes in a grid ``columns`` wide, each in a cell of
    ``image_size`` pixels, colour and shape drawn uniformly; the answer names every colour in reading order
    ("red, blue, green, ..."), reward "ordered_words". Options: the ``ShapesConfig`` fields but ``questions``.
    Meta: ``{"colors", "shapes"}`` in reading order; ids ``synthetic_shapes_colors-<split>-<i>``."""
    if not 1 <= columns <= count:
        raise DataError(f"synthetic_shapes_colors needs 1 <= columns <= count, got columns={columns}, count={count}")
    known = (set(ShapesConfig.__dataclass_fields__) - {"n", "questions"}) | {"count", "columns"}
    cfg = _shapes_config("synthetic_shapes_colors", split, n, options, known)
    rng, colors, shapes = _split_rng(cfg.seed, split), cfg.color_names(), cfg.shape_names()
    rows, size, records = -(-count // columns), cfg.image_size, []
    for i in range(cfg.n):
        picked = [(colors[int(rng.integers(len(colors)))], shapes[int(rng.integers(len(shapes)))])
                  for _ in range(count)]
        image = Image.new("RGB", (columns * size, rows * size), COLORS[cfg.background])
        for j, (color, shape) in enumerate(picked):
            image.paste(draw_shape(shape, color, cfg, rng), ((j % columns) * size, (j // columns) * size))
        prompt = COLORS_QUESTION if cfg.prompt_template is None else render_template(cfg.prompt_template,
                                                                                      {"prompt": COLORS_QUESTION})
        records.append({"id": f"synthetic_shapes_colors-{split}-{i}", "prompt": prompt, "images": [image],
                        "answer": ", ".join(c for c, _ in picked), "reward": "ordered_words",
                        "meta": {"colors": [c for c, _ in picked], "shapes": [s for _, s in picked]}})
    return Records(records, LoadReport(source=f"synthetic_shapes_colors[{split}]", total=cfg.n, seen=cfg.n,
                                       kept=cfg.n))
