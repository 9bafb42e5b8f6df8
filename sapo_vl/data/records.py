"""The normalised record, its validation, and the error / skip accounting shared by every loader.

A record is a plain dict::

    {"id": str, "prompt": str | list[message], "images": list[PIL.Image (RGB)],
     "answer": str | int | float | list[str | int | float] | None, "reward": str | None, "meta": dict,
     **extra_columns}

A chat-message prompt is ``[{"role": "system"|"user"|"assistant"|"tool", "content": str | list[part]}]`` with parts
``{"type": "text", "text": str}`` or ``{"type": "image"}``. After normalisation every image part is a bare
``{"type": "image"}`` placeholder and the i-th image part refers to ``images[i]``: images embedded in parts
(``{"type": "image", "image": <any image form>}``) are decoded and moved into ``images`` in order, and when a
message prompt has no image part but the record has images, placeholders are inserted at the start of the first
user message (TRL's convention).
"""

from __future__ import annotations

import copy
import difflib
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sapo_vl.data.images import ImageDecodeError, as_image_list, decode_image, resolve_image
from sapo_vl.errors import DataError

logger = logging.getLogger("sapo_vl.data")

ON_ERROR = ("raise", "skip")
RESERVED_KEYS = ("id", "prompt", "images", "answer", "reward", "meta")
ROLES = ("system", "user", "assistant", "tool")


class RecordError(DataError):
    """A dataset row failed validation: names the row (index and id), the field, and what was expected."""

    def __init__(self, reason: str, index: int | None, record_id: str | None, field: str, detail: str):
        where = f"record {index}" if index is not None else "record"
        if record_id is not None:
            where += f" (id {record_id!r})"
        super().__init__(f"{where}, field {field!r}: {detail}")
        self.reason = reason
        self.index = index
        self.record_id = record_id
        self.field = field
        self.detail = detail


@dataclass
class LoadReport:
    """What a load kept and skipped. ``skipped`` counts skips per reason; ``examples`` keeps the first messages."""

    source: str = "<records>"
    total: int | None = None  # rows in the source (known without reading them all)
    seen: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 3

    def add_skip(self, err: RecordError) -> None:
        self.skipped[err.reason] += 1
        bucket = self.examples.setdefault(err.reason, [])
        if len(bucket) < self.max_examples:
            bucket.append(str(err))
        logger.debug("%s: skipped %s", self.source, err)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items()))
        return f"{self.source}: kept {self.kept} of {self.seen} records, skipped {self.num_skipped} ({reasons})"

    def log(self) -> None:
        """Emit one warning with per-reason counts and the first example of each reason (no-op if none)."""
        if not self.skipped:
            return
        firsts = "; ".join(f"{k}: {v[0]}" for k, v in sorted(self.examples.items()) if v)
        logger.warning("%s. First of each: %s", self.summary(), firsts)


class Records(list):
    """A ``list[dict]`` of normalised records that also carries the ``LoadReport`` of the load that made it."""

    def __init__(self, items: Iterable[dict] = (), report: LoadReport | None = None):
        super().__init__(items)
        self.report = report if report is not None else LoadReport(seen=len(self), kept=len(self))


@dataclass(frozen=True)
class FieldMap:
    """Which raw column feeds each normalised key. ``image`` lists candidates; the first present one is used."""

    id: str = "id"
    prompt: str = "prompt"
    images: tuple[str, ...] = ("images", "image")
    answer: str = "answer"
    reward: str = "reward"
    meta: str = "meta"
    images_required: bool = False  # True when the user named the image column: its absence is then an error

    @classmethod
    def from_args(cls, *, id_field=None, prompt_field=None, image_field=None, answer_field=None,
                  reward_field=None, meta_field=None) -> FieldMap:
        """Build from flat (recipe-level) arguments; None keeps the default."""
        base = cls()
        images = base.images if image_field is None else (
            (image_field,) if isinstance(image_field, str) else tuple(image_field))
        return cls(id=id_field or base.id, prompt=prompt_field or base.prompt, images=images,
                   answer=answer_field or base.answer, reward=reward_field or base.reward,
                   meta=meta_field or base.meta, images_required=image_field is not None)

    def image_column(self, row: dict) -> str | None:
        return next((c for c in self.images if c in row), None)

    def consumed(self, row: dict) -> set[str]:
        cols = {self.id, self.prompt, self.answer, self.reward, self.meta}
        img = self.image_column(row)
        return cols | ({img} if img else set())


_FIELD_KEYS = ("id_field", "prompt_field", "image_field", "answer_field", "reward_field", "meta_field")


@dataclass(frozen=True)
class RecordSpec:
    """How raw rows become records: the options of ``load_records``. ``RecordSpec.of(**options)`` builds one from
    flat keywords (a recipe's ``data.kwargs``), the field mapping given as ``prompt_field=...`` etc.

    - ``dataset``: prefix of generated ids (``<dataset>-<index>``; default: the file's stem).
    - ``fields``: the raw column feeding each record key (``FieldMap``).
    - ``prompt_template``: formats str prompts with ``render_template`` (any column by name).
    - ``default_reward``: reward name for rows without one. ``require_answer``: a missing answer is an error.
    - ``base_dir``: where relative image paths resolve (default: the data file's folder; cwd for in-memory rows).
    - ``decode_images``: False checks every image and resolves paths but leaves decoding to the caller
      (``decode_images``), so a large evaluation set is decoded chunk by chunk.
    - ``transform(row, index) -> row``: reshapes each raw row before normalisation (evaluation task adapters).
    """

    dataset: str | None = None
    fields: FieldMap = FieldMap()
    prompt_template: str | None = None
    default_reward: str | None = None
    require_answer: bool = True
    base_dir: str | os.PathLike | None = None
    decode_images: bool = True
    transform: Callable[[dict, int], dict] | None = None
    answer_names: Sequence[str] | None = None  # int answers index into these (set from a datasets ClassLabel)

    @classmethod
    def of(cls, **options: Any) -> RecordSpec:
        field_map = FieldMap.from_args(**{k: options.pop(k) for k in _FIELD_KEYS if k in options})
        known = [f for f in cls.__dataclass_fields__ if f not in ("fields", "answer_names")]
        unknown = sorted(set(options) - set(known))
        if unknown:
            close = [m for u in unknown for m in difflib.get_close_matches(u, known + list(_FIELD_KEYS), n=1)]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise DataError(f"unknown record option(s) {unknown}{hint}; known: {sorted(known + list(_FIELD_KEYS))}")
        return cls(fields=field_map, **options)


_BLANK_RUN = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")  # 3+ line breaks left by empty fields -> one blank line
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render_template(template: str, row: dict[str, Any]) -> str:
    """Fill ``{field}`` placeholders from ``row``; ``{{`` / ``}}`` give literal braces; other braces stay (so
    ``\\boxed{}`` needs no escaping). Runs of blank lines left by empty fields collapse to one; the result is
    stripped. A placeholder naming no field raises ``KeyError`` naming it and the fields there are."""

    def sub(match: re.Match) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0)[0]
        if name not in row:
            raise KeyError(f"the template uses {{{name}}} but there is no field {name!r} (fields: {sorted(row)})")
        return "" if row[name] is None else str(row[name])

    return _BLANK_RUN.sub("\n\n", _PLACEHOLDER.sub(sub, template)).strip()


def _load_image(value: Any, opts: RecordSpec) -> Any:
    return decode_image(value, opts.base_dir) if opts.decode_images else resolve_image(value, opts.base_dir)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0)


def _scalar(value: Any) -> Any:
    """numpy scalars -> Python scalars (Parquet via pandas can produce them)."""
    return value.item() if type(value).__module__ == "numpy" and hasattr(value, "item") else value


def _normalize_answer(value: Any, opts: RecordSpec, fail: Callable[..., RecordError]) -> Any:
    name = opts.fields.answer
    value = _scalar(value)
    if _missing(value) or (isinstance(value, str) and not value.strip()):
        if opts.require_answer:
            raise fail("missing_answer", name, "missing or empty answer; expected a str, a number or a "
                       "non-empty list of them (pass require_answer=False for answer-free data)")
        return None
    if opts.answer_names is not None and isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(opts.answer_names):
            raise fail("invalid_answer", name, f"class index {value} outside 0..{len(opts.answer_names) - 1}")
        return opts.answer_names[value]
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    for i, item in enumerate(items):
        item = _scalar(item)
        where = f"{name}[{i}]" if isinstance(value, (list, tuple)) else name
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise fail("invalid_answer", where, f"expected a str or a number, got {type(item).__name__}")
        if isinstance(item, float) and not math.isfinite(item):
            raise fail("invalid_answer", where, f"expected a finite number, got {item}")
        items[i] = item
    return items if isinstance(value, (list, tuple)) else items[0]


def _normalize_part(part: Any, where: str, images: list, opts: RecordSpec, fail) -> dict:
    if isinstance(part, str):
        return {"type": "text", "text": part}
    if not isinstance(part, dict) or part.get("type") not in ("text", "image"):
        raise fail("invalid_prompt", where,
                   f"expected a content part {{'type': 'text'|'image', ...}}, got {part!r:.80}")
    if part["type"] == "text":
        if not isinstance(part.get("text"), str):
            raise fail("invalid_prompt", where, "text part needs a str 'text'")
        return dict(part)
    payload = next((part[k] for k in ("image", "path", "url") if part.get(k) is not None), None)
    if payload is not None:
        try:
            images.append(_load_image(payload, opts))
        except ImageDecodeError as exc:
            raise fail(exc.reason, where, exc.detail) from exc
    return {"type": "image"}


def _normalize_messages(prompt: list, opts: RecordSpec, fail) -> tuple[list[dict], list, int]:
    """Validate messages; returns (messages, images embedded in parts, number of image parts)."""
    name = opts.fields.prompt
    messages, embedded, n_parts = [], [], 0
    for m, msg in enumerate(prompt):
        where = f"{name}[{m}]"
        if not isinstance(msg, dict) or msg.get("role") not in ROLES or "content" not in msg:
            raise fail("invalid_prompt", where, f"expected {{'role': one of {ROLES}, 'content': ...}}, "
                       f"got {msg!r:.80}")
        content = msg["content"]
        if isinstance(content, str):
            messages.append(dict(msg))
            continue
        if not isinstance(content, (list, tuple)):
            raise fail("invalid_prompt", f"{where}.content", f"expected a str or a list of parts, "
                       f"got {type(content).__name__}")
        parts = [_normalize_part(p, f"{where}.content[{i}]", embedded, opts, fail) for i, p in enumerate(content)]
        n_parts += sum(p["type"] == "image" for p in parts)
        messages.append({**msg, "content": parts})
    if not any(m["role"] == "user" for m in messages):
        raise fail("invalid_prompt", name, "a message prompt needs at least one 'user' message")
    return messages, embedded, n_parts


def _insert_placeholders(messages: list[dict], n: int) -> list[dict]:
    """Put ``n`` image placeholders at the start of the first user message (TRL's convention)."""
    out, done = [], False
    for msg in messages:
        if not done and msg["role"] == "user":
            content = msg["content"]
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
            msg = {**msg, "content": [{"type": "image"} for _ in range(n)] + parts}
            done = True
        out.append(msg)
    return out


def _normalize_prompt(raw: dict, opts: RecordSpec, fail) -> tuple[Any, list, int | None]:
    """Returns (prompt, images embedded in message parts, number of image parts or None for a str prompt)."""
    name = opts.fields.prompt
    prompt = raw.get(name)
    if _missing(prompt) or (isinstance(prompt, str) and not prompt.strip()):
        raise fail("missing_prompt", name, f"missing or empty prompt; expected a str or a list of chat messages "
                   f"(columns present: {sorted(raw)})")
    if isinstance(prompt, str):
        if opts.prompt_template is not None:
            try:
                prompt = render_template(opts.prompt_template, {**raw, "prompt": prompt})
            except KeyError as exc:
                raise fail("invalid_prompt", name, f"prompt_template {opts.prompt_template!r}: {exc.args[0]}") from exc
        return prompt, [], None
    if isinstance(prompt, (list, tuple)):
        return _normalize_messages(list(prompt), opts, fail)
    raise fail("invalid_prompt", name, f"expected a str or a list of chat messages, got {type(prompt).__name__}")


def _decode_column(raw: dict, opts: RecordSpec, fail) -> list:
    column = opts.fields.image_column(raw)
    if column is None:
        if opts.fields.images_required:
            raise fail("missing_image", opts.fields.images[0], f"image column {opts.fields.images[0]!r} is absent "
                       f"(columns present: {sorted(raw)}); expected it in every row, None for no image")
        return []
    images = []
    for k, value in enumerate(as_image_list(raw[column])):
        try:
            images.append(_load_image(value, opts))
        except ImageDecodeError as exc:
            raise fail(exc.reason, f"{column}[{k}]", exc.detail) from exc
    return images


def _reconcile_images(prompt: Any, embedded: list, n_parts: int | None, column: list, opts, fail):
    """Make the i-th image part of a message prompt refer to images[i]; returns (prompt, images)."""
    if n_parts is None:
        return prompt, column
    img_field = opts.fields.images[0]
    if embedded:
        if column or len(embedded) != n_parts:
            raise fail("invalid_prompt", opts.fields.prompt, f"{len(embedded)} of {n_parts} image parts carry an "
                       f"image and the {img_field!r} column has {len(column)}; expected either every image part to "
                       f"carry its image or all images in the {img_field!r} column")
        return prompt, embedded
    if n_parts == 0 and column:
        return _insert_placeholders(prompt, len(column)), column
    if n_parts != len(column):
        raise fail("invalid_prompt", img_field, f"the prompt has {n_parts} image parts but the record has "
                   f"{len(column)} images; expected one image per image part")
    return prompt, column


def _record_id(raw: dict, index: int, opts: RecordSpec, fail) -> str:
    value = _scalar(raw.get(opts.fields.id))
    if value is None:
        return f"{opts.dataset or 'records'}-{index}"
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        raise fail("invalid_field", opts.fields.id, f"expected a non-empty str or an int, got {value!r:.60}")
    return str(value)


def normalize_record(raw: dict, index: int, opts: RecordSpec = RecordSpec()) -> dict:
    """Turn one raw row into a normalised record (module docstring). Raises ``RecordError`` on bad input."""
    record_id: str | None = None

    def fail(reason: str, fld: str, detail: str) -> RecordError:
        return RecordError(reason, index, record_id, fld, detail)

    if not isinstance(raw, dict):
        raise fail("invalid_field", "<row>", f"expected a dict row, got {type(raw).__name__}")
    if opts.transform is not None:
        try:
            raw = opts.transform(raw, index)
        except RecordError:
            raise
        except DataError as exc:
            raise fail("invalid_row", "<row>", str(exc)) from exc
    f = opts.fields
    record_id = _record_id(raw, index, opts, fail)
    prompt, embedded, n_parts = _normalize_prompt(raw, opts, fail)
    answer = _normalize_answer(raw.get(f.answer), opts, fail)
    reward = raw.get(f.reward, None)
    if reward is None:
        reward = opts.default_reward
    elif not isinstance(reward, str) or not reward:
        raise fail("invalid_field", f.reward, f"expected a reward function name (str) or None, got {reward!r:.60}")
    meta = raw.get(f.meta)
    if meta is None:
        meta = {}
    elif not isinstance(meta, dict):
        raise fail("invalid_field", f.meta, f"expected a dict, got {type(meta).__name__}")
    prompt, images = _reconcile_images(prompt, embedded, n_parts, _decode_column(raw, opts, fail), opts, fail)
    record = {"id": record_id, "prompt": prompt, "images": images, "answer": answer, "reward": reward,
              "meta": dict(meta)}
    for key, value in raw.items():
        if key in f.consumed(raw):
            continue
        if key in RESERVED_KEYS:  # an unmapped column named like a normalised key: keep it, out of the way
            record["meta"].setdefault(key, value)
        else:
            record[key] = value
    return record


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise DataError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


def check_prompt_length(
    records: Sequence[dict],
    count_tokens: Callable[[dict], int],
    max_prompt_length: int,
    on_error: str = "raise",
) -> Records:
    """Drop (``on_error="skip"``) or reject (``"raise"``) records whose prompt exceeds ``max_prompt_length`` tokens.

    ``count_tokens(record) -> int`` is the collator's hook (chat template + processor, image tokens included), so
    this layer needs no tokenizer; a ``DataError`` it raises (``CollateError``) is raised or skipped like the
    others. Skips are counted under ``"prompt_too_long"`` (or the hook's reason) in the returned ``Records.report``
    (which extends the input's report when the input is a ``Records``).
    """
    check_on_error(on_error)
    if max_prompt_length <= 0:
        raise ValueError(f"max_prompt_length must be positive, got {max_prompt_length}")
    base = getattr(records, "report", None)
    report = copy.deepcopy(base) if base else LoadReport(seen=len(records))
    kept = []
    for index, record in enumerate(records):
        try:
            n = int(count_tokens(record))
        except DataError as raised:  # the collator could not build this record's prompt (e.g. bad image)
            err = RecordError(getattr(raised, "reason", "collate"), index, record.get("id"),
                              getattr(raised, "field", "prompt/images"), getattr(raised, "detail", str(raised)))
            if on_error == "raise":
                raise err from raised
            report.add_skip(err)
            continue
        if n > max_prompt_length:
            err = RecordError("prompt_too_long", index, record.get("id"), "prompt",
                              f"prompt is {n} tokens; expected at most max_prompt_length={max_prompt_length}")
            if on_error == "raise":
                raise err
            report.add_skip(err)
            continue
        kept.append(record)
    report.kept = len(kept)
    if report.num_skipped > (base.num_skipped if base else 0):
        report.log()
    return Records(kept, report)
