"""Text helpers shared by the verifiers: completion unpacking, think-block stripping and answer-span extraction.

Math, visual QA and multiple-choice rewards all read a model's final answer the same way, so the rules live here
once:

1. ``completion_text``: a TRL completion is a string, or (conversational datasets) a list of chat messages; we
   take the assistant content, whose parts may be strings or ``{"type": "text", "text": ...}`` dicts.
2. ``strip_think``: everything up to the last ``</think>`` is reasoning and is dropped. A ``<think>`` with no
   closing tag means the model never finished reasoning: there is no answer (``None``). A ``</think>`` with no
   opening tag is normal for Qwen3 chat templates, which put ``<think>`` in the prompt.
3. ``last_boxed``: the content of the last complete ``\\boxed{...}`` / ``\\fbox{...}``, with nested braces. Boxes
   joined only by connectors (``$\\boxed{-2}$ and $\\boxed{1}$``, ``\\boxed{1}, \\boxed{2}``) are one answer split over
   several boxes and are read together (``-2, 1``); a box followed by prose and another box is a correction, and
   only the last counts.
4. ``last_tag_block``: the content of the last complete ``<answer>...</answer>`` block.
5. ``fallback_answer``: the answer after the last "answer is" / "Answer:" style cue (markdown ``**Answer:**`` too):
   a leading ``$...$`` span (and the spans joined to it), else the sentence that follows, cut before a reason
   (", since ...") and read past a subject ("The largest $n$ is 34" -> 34). A number in prose with no cue is
   never an answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

THINK_TAGS = ("<think>", "</think>")
ANSWER_TAGS = ("<answer>", "</answer>")

# Cues that introduce a final answer in free text. Each is a regex matched case-insensitively; the answer follows
# the last match (see fallback_answer). Markdown emphasis may wrap the cue: "**Answer:**", "**Answer**:".
DEFAULT_FALLBACK_PATTERNS: tuple[str, ...] = (
    r"final answer[*_]*\s*(?:is\b)?[*_]*\s*[:：]?",
    r"answer\s+is\s*[:：]?",
    r"answer[*_]*\s*[:：]",
)

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")
# What may stand between two boxes (or two $...$ spans) of one answer: math delimiters, spacing, commas, "and"/"or".
_JOINER = re.compile(r"(?:\s|\$|\\[()\[\],;! ]|\\q?quad\b|[,;&]|\band\b|\bor\b|\\text\{\s*(?:and|or)?\s*\})*", re.I)
# $$...$$, $...$ (an escaped "\$" inside is content), \(...\), \[...\]
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\$((?:\\.|[^$\\])+)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.S)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")
_REASON = re.compile(r"(?:,\s*(?:since|because|as|so|which|where|given|hence|thus|therefore)|\s+(?:since|because))"
                     r"\b.*$", re.I | re.S)  # a reason after the answer: ", since ...", " because ..."
_VERB = r"\s*(?:is|are|equals|was)\b"
_SUBJECT_IS = re.compile(r"^(?:(?:the|a|an|our|this|that|its)\b|\$[^$]+\$).*\s(?:is|are|equals|was)\s+(\S.*)$",
                         re.I | re.S)


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


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, content)`` of every complete ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces matched) and
    brace-less ``\\boxed 5`` (one token up to whitespace or ``$``), in order; an unclosed box is skipped."""
    found = []
    for m in _BOX_RE.finditer(text):
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            content = _balanced(text, i)
            if content is not None:
                found.append((m.start(), i + len(content) + 2, content))
        elif i > m.end() and i < len(text):
            token = re.match(r"[^\s$]+", text[i:])
            if token:
                found.append((m.start(), i + token.end(), token.group(0)))
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
    """The final boxed answer, stripped, or ``None``: the last non-empty box together with the boxes joined to it
    by connectors only (``$\\boxed{-2}$ and $\\boxed{1}$`` -> ``-2, 1``); prose between two boxes makes the later
    one a correction that replaces the earlier.

    >>> last_boxed(r"$\\boxed{-2}$ and $\\boxed{1}$"), last_boxed(r"\\boxed{12}. No, wait: \\boxed{13}")
    ('-2, 1', '13')
    """
    boxes = [b for b in _boxes(text) if b[2].strip()]
    if not boxes:
        return None
    group = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        if not _JOINER.fullmatch(text[box[1]:group[0][0]]):
            break
        group.insert(0, box)
    return ", ".join(content.strip() for _, _, content in group)


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
    """The answer after the last answer cue (any of ``patterns``), cleaned by :func:`clean_answer`; ``None`` when
    no cue occurs or nothing follows it. See :func:`cue_span` for what is read after the cue.

    >>> fallback_answer("So the answer is $\\\\frac{1}{2}$.")
    '\\\\frac{1}{2}'
    >>> fallback_answer("**Answer:** 42")
    '42'
    >>> fallback_answer("Final Answer: The final answer is $(0,1)$. I hope it is correct.")
    '(0,1)'
    """
    best_end = -1
    for pattern in patterns:
        for m in re.finditer(pattern, text, flags=re.IGNORECASE):
            best_end = max(best_end, m.end())
    if best_end < 0:
        return None
    return cue_span(text[best_end:])


def cue_span(rest: str) -> str | None:
    """The answer in the text that follows an answer cue.

    1. Leading markdown, colons and blank lines are skipped.
    2. A ``$...$`` / ``\\(...\\)`` / ``\\[...\\]`` span at the start is the answer, with the spans joined to it
       by connectors only ("$-6$ and $10$" -> "-6, 10"); what follows it ("I hope it is correct") is not.
    3. Otherwise the first sentence is, cut before a reason (", since ...", " because ...") and, when it opens
       with a subject ("The largest $n$ is 34"), read after its verb.
    """
    rest = rest.lstrip(" \t*_:：\n")
    spans, after = _leading_math(rest)
    if spans and not re.match(_VERB, after, re.I):  # "$n$ is 34": the span was the subject
        return clean_answer(", ".join(spans))
    end = _SENTENCE_END.search(rest)
    sentence = _REASON.sub("", rest[: end.start()] if end else rest).strip()
    subject = _SUBJECT_IS.match(sentence)
    return clean_answer(subject.group(1) if subject else sentence)


def _leading_math(text: str) -> tuple[list[str], str]:
    """The contents of the math spans at the start of ``text`` that follow each other with connectors only, and the
    text after them."""
    spans, pos = [], 0
    while True:
        m = _MATH_SPAN.search(text, pos)
        if m is None or not (_JOINER.fullmatch(text[pos: m.start()]) if spans else m.start() == 0):
            return spans, text[pos:]
        spans.append(next(g for g in m.groups() if g is not None).strip())
        pos = m.end()


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
