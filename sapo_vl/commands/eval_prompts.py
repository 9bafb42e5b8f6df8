"""``--write-prompts``: every doc's prompt, for generating completions elsewhere (a vLLM / OpenAI-compatible
server), to be scored later with ``--samples``.

One JSON line per doc::

    {"task": ..., "doc_id": ..., "prompt": <str or chat messages>, "images": [<path or data URI>, ...],
     "messages": [<OpenAI chat messages; images as data-URI image_url parts before the user text>],
     "generation": {"n": ..., "temperature": ..., "top_p": ..., "top_k": ..., "max_new_tokens": ...}}
"""

from __future__ import annotations

import base64
import io
import json
import mimetypes
from pathlib import Path
from typing import Any

from sapo_vl.evaluation.tasks import load_task_records, resolve_task

_MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif"), (b"RIFF", "image/webp"))


def _bytes_mime(data: bytes) -> str:
    return next((mime for magic, mime in _MAGIC if data.startswith(magic)), "application/octet-stream")


def image_data_uri(image: Any) -> str:
    """A data URI for a path, raw bytes, a PIL image, or an existing data URI."""
    if isinstance(image, str) and image.startswith(("data:", "http://", "https://")):
        return image
    if isinstance(image, (str, Path)):
        data = Path(image).read_bytes()
        mime = mimetypes.guess_type(str(image))[0] or _bytes_mime(data)
    elif isinstance(image, bytes):
        data, mime = image, _bytes_mime(image)
    else:  # PIL image
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data, mime = buf.getvalue(), "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def openai_messages(prompt: Any, images: list[Any]) -> list[dict]:
    """OpenAI chat messages: the images (as data URIs) go before the text of the first user turn."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    parts = [{"type": "image_url", "image_url": {"url": image_data_uri(img)}} for img in images]
    for msg in messages:
        if msg["role"] == "user":
            text = msg["content"]
            msg["content"] = parts + ([{"type": "text", "text": text}] if isinstance(text, str) else list(text))
            break
    return messages


def write_prompts(tasks: list[str], path: str, *, limit: int | None = None,
                  data_paths: dict[str, str] | None = None) -> int:
    """Write the prompts of ``tasks`` to ``path``; returns the number of docs written."""
    data_paths = data_paths or {}
    count = 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for name in tasks:
            spec = resolve_task(name)
            records = load_task_records(spec, data_paths.get(spec.name) or data_paths.get(name), limit)
            gen = spec.generation.model_dump()
            for rec in records:
                line = {"task": spec.name, "doc_id": rec["id"], "prompt": rec["prompt"],
                        "images": [str(img) if isinstance(img, (str, Path)) else image_data_uri(img)
                                   for img in rec["images"]],
                        "messages": openai_messages(rec["prompt"], rec["images"]), "generation": gen}
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
                count += 1
    return count
