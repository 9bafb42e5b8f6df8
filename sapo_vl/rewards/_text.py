"""Text helpers shared by the verifiers: completion unpacking, think-block stripping and answer-span extraction.

Math, visual QA and multiple-choice rewards all read a model's final answer the same way, so the rules live here
once:

1. ``completion_text``: a TRL completion is a string, or (conversational datasets) a list of chat messages; we
   take the assistant content, whose parts may be strings or ``{"type": "text", "text": ...}`` dicts.
2. ``strip_think``: everything up to the last ``</think>`` is reasoning and is dropped. A ``<think>`` with no
   closing tag means the model never finished reasoning: there is no answer (``None``). A ``</think>`` with no
   opening tag is normal for Qwen3 chat templates, which put ``<think>`` in the prompt.
3. ``last_boxed``: the content of the last complete ``\\boxed{...}`` / ``\\fbox{...}``, with nested braces.
4. ``last_tag_block``: the content of the last complete ``<answer>...</answer>`` block.
5. ``fallback_answer``: text after the last "answer is" / "Answer:" style cue, up to the end of its line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

THINK_TAGS = ("<think>", "</think>")
ANSWER_TAGS = ("<answer>", "</answer>")

# Cues that introduce a final answer in free text. Each is a regex matched case-insensitively; the answer is the
# text that follows the last match, up to the end of its line.
DEFAULT_FALLBACK_PATTERNS: tuple[str, ...] = (
    r"final answer\s*(?:is)?\s*[:：]?",
    r"answer\s+is\s*[:：]?",
    r"answer\s*[:：]",
)

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")


def completion_text(completion: object, *, index: int | None = None) -> str:
    """The text of one completion: a string, one chat message, or a list of chat messages (assistant turns).

    >>> completion_text([{"role": "assistant", "content": "42"}])
    '42'
    >>> completion_text({"role": "assistant", "content": [
    ...     {"type": "text", "text": "4"}, {"type": "text", "text": "2"}]})
    '42'
    """
    where = f"completion {index}" if index is not None else "completion"
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"), where)
    if isinstance(completion, (list, tuple)):
        if not all(isinstance(m, dict) for m in completion):
            raise TypeError(f"{where}: expected a string or a list of chat messages (dicts), got {completion!r:.200}")
        assistant = [m for m in completion if m.get("role", "assistant") == "assistant"]
        return "".join(_content_text(m.get("content"), where) for m in assistant)
    raise TypeError(
        f"{where}: expected a string or chat messages, got {type(completion).__name__}: {completion!r:.200}"
    )


def _content_text(content: object, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, dict):
                continue  # image / video parts carry no answer text
            else:
                raise TypeError(f"{where}: unexpected message content part {part!r:.200}")
        return "".join(parts)
    raise TypeError(f"{where}: message content must be a string or a list of parts, got {content!r:.200}")


def strip_think(text: str, tags: tuple[str, str] = THINK_TAGS) -> str | None:
    """Drop the reasoning block. ``None`` if a think block is opened and never closed.

    >>> strip_think("<think>hmm</think> 42")
    ' 42'
    >>> strip_think("<think>still thinking") is None
    True
    >>> strip_think("reasoning from a templated <think></think> 7")
    ' 7'
    """
    open_tag, close_tag = tags
    last_open = text.rfind(open_tag)
    last_close = text.rfind(close_tag)
    if last_open > last_close:  # the last think block never closes
        return None
    if last_close >= 0:
        return text[last_close + len(close_tag):]
    return text


def find_boxed(text: str) -> list[str]:
    """Contents of every complete ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces matched), in order.

    Also accepts the brace-less ``\\boxed 5`` form (one token). An unclosed box (a truncated completion) is skipped.

    >>> find_boxed(r"\\boxed{\\frac{1}{2}} and \\fbox{x^{2}}")
    ['\\\\frac{1}{2}', 'x^{2}']
    """
    found = []
    for m in _BOX_RE.finditer(text):
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            content = _balanced(text, i)
            if content is not None:
                found.append(content)
        elif i > m.end() and i < len(text):  # "\boxed 5": one token up to whitespace or '$'
            token = re.match(r"[^\s$]+", text[i:])
            if token:
                found.append(token.group(0))
    return found


def _balanced(text: str, start: int) -> str | None:
    """The content of the brace group opening at ``text[start] == '{'``; escaped braces ``\\{`` do not count."""
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1: i]
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """The last non-empty boxed content, stripped, or ``None``."""
    for content in reversed(find_boxed(text)):
        if content.strip():
            return content.strip()
    return None


def last_tag_block(text: str, tags: tuple[str, str] = ANSWER_TAGS) -> str | None:
    """The stripped content of the last complete ``open ... close`` block, or ``None`` (also when it is empty)."""
    open_tag, close_tag = tags
    end = text.rfind(close_tag)
    while end >= 0:
        start = text.rfind(open_tag, 0, end)
        if start >= 0:
            content = text[start + len(open_tag): end].strip()
            return content or None
        end = text.rfind(close_tag, 0, end)
    return None


def fallback_answer(text: str, patterns: Sequence[str] = DEFAULT_FALLBACK_PATTERNS) -> str | None:
    """Text after the last answer cue (any of ``patterns``), up to the end of that line, cleaned of markdown
    emphasis, ``$`` delimiters and a trailing full stop. ``None`` when no cue occurs or nothing follows it.

    >>> fallback_answer("So the answer is $\\\\frac{1}{2}$.")
    '\\\\frac{1}{2}'
    >>> fallback_answer("**Answer:** 42")
    '42'
    """
    best_end = -1
    for pattern in patterns:
        for m in re.finditer(pattern, text, flags=re.IGNORECASE):
            best_end = max(best_end, m.end())
    if best_end < 0:
        return None
    rest = text[best_end:]
    line = rest.lstrip(" \t*_:").split("\n", 1)[0]
    return clean_answer(line)


def clean_answer(span: str) -> str | None:
    """Trim a raw answer span: whitespace, markdown ``**``/``__``, ``$``/``\\(\\)``/``\\[\\]`` delimiters and a
    trailing full stop. ``None`` if nothing is left."""
    s = span.strip()
    for _ in range(3):  # peel nested wrappers such as "**$x$**."
        before = s
        s = s.strip().strip("*_").strip()
        if s.endswith("."):
            s = s[:-1].rstrip()
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left): len(s) - len(right)].strip()
        if s == before:
            break
    return s or None


def answer_span(
    text: str,
    *,
    fallback: bool | Sequence[str] = True,
    think_tags: tuple[str, str] = THINK_TAGS,
    answer_tags: tuple[str, str] = ANSWER_TAGS,
) -> str | None:
    """The final answer span of a completion, by priority: last ``\\boxed{}`` > last answer block > answer cue.

    ``fallback``: ``True`` uses :data:`DEFAULT_FALLBACK_PATTERNS`, ``False`` disables the cue search, a sequence
    of regexes replaces the defaults. ``None`` if the think block is unclosed or nothing is found.
    """
    body = strip_think(text, think_tags)
    if body is None:
        return None
    boxed = last_boxed(body)
    if boxed is not None:
        return boxed
    block = last_tag_block(body, answer_tags)
    if block is not None:
        return clean_answer(block)
    if fallback is False:
        return None
    patterns = DEFAULT_FALLBACK_PATTERNS if fallback is True else tuple(fallback)
    return fallback_answer(body, patterns)


def as_list(column: object, n: int, name: str, fn_name: str) -> list:
    """Validate that a per-sample column has one entry per completion."""
    if isinstance(column, (str, bytes)) or not hasattr(column, "__len__"):
        raise TypeError(f"{fn_name}: column '{name}' must be a list with one entry per completion, got {column!r:.100}")
    values = list(column)
    if len(values) != n:
        raise ValueError(f"{fn_name}: column '{name}' has {len(values)} entries but there are {n} completions")
    return values
