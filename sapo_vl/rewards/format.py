"""Format rewards: does a completion follow the ``<think>...</think><answer>...</answer>`` output format?

Strict (:func:`is_strict_format`, reward ``"format"``): optional leading whitespace, an optional closed think block
(required with ``require_think=True``), then exactly one non-empty answer block, then nothing but whitespace. Each
tag occurs at most once in the whole completion. With ``think_in_prompt=True`` (Qwen3-style chat templates that
open ``<think>`` in the prompt) the completion starts inside the think block: it must contain exactly one closing
think tag and no opening one.

Lenient (:func:`is_lenient_format`, reward ``"format_lenient"``): the think block, if opened, is closed, and after
it there is at least one complete non-empty answer block; text around it is allowed.

Tags are configurable (``think_tags``, ``answer_tags``). Rewards are 1.0 / 0.0 and never ``None``: format applies to
every sample. What each reward grades, as an answer (its verifier's ``extract``): :func:`strict_answer` and
:func:`lenient_answer` give the answer block's content when the format holds and ``None`` when it is broken, so a
completion scores 1.0 exactly when they return a string.
"""

from __future__ import annotations

from sapo_vl.rewards.text import ANSWER_TAGS, THINK_TAGS, completion_text, last_tag_block, strip_think


def _after_think(text: str, think_tags: tuple[str, str], require_think: bool, think_in_prompt: bool) -> str | None:
    """The text after a well-formed think block (or the whole text when there is none), else ``None``."""
    open_tag, close_tag = think_tags
    n_open, n_close = text.count(open_tag), text.count(close_tag)
    if think_in_prompt:
        return text.split(close_tag, 1)[1] if (n_open, n_close) == (0, 1) else None
    body = text.lstrip()
    if body.startswith(open_tag):
        return body.split(close_tag, 1)[1] if (n_open, n_close) == (1, 1) else None
    if require_think or n_open or n_close:
        return None
    return body


def strict_answer(
    text: str,
    /,
    *,
    think_tags: tuple[str, str] = THINK_TAGS,
    answer_tags: tuple[str, str] = ANSWER_TAGS,
    require_think: bool = False,
    think_in_prompt: bool = False,
    **_columns,
) -> str | None:
    """The answer block's content when ``text`` is ``[<think>...</think>] <answer>non-empty</answer>`` and nothing
    else, else ``None``. Other keywords (a record's columns) are ignored.

    >>> strict_answer("<think>hm</think><answer> 4 </answer>"), strict_answer("<answer>4</answer> ok")
    ('4', None)
    """
    open_a, close_a = answer_tags
    if text.count(open_a) != 1 or text.count(close_a) != 1:
        return None
    rest = _after_think(text, think_tags, require_think, think_in_prompt)
    if rest is None:
        return None
    rest = rest.strip()
    if not (rest.startswith(open_a) and rest.endswith(close_a)):
        return None
    return rest[len(open_a): len(rest) - len(close_a)].strip() or None


def is_strict_format(
    text: str,
    *,
    think_tags: tuple[str, str] = THINK_TAGS,
    answer_tags: tuple[str, str] = ANSWER_TAGS,
    require_think: bool = False,
    think_in_prompt: bool = False,
) -> bool:
    """Whether ``text`` is ``[<think>...</think>] <answer>non-empty</answer>`` and nothing else.

    >>> is_strict_format("<think>2+2</think>\\n<answer>4</answer>\\n")
    True
    >>> is_strict_format("<answer>4</answer> Hope this helps!")
    False
    """
    return strict_answer(text, think_tags=think_tags, answer_tags=answer_tags, require_think=require_think,
                         think_in_prompt=think_in_prompt) is not None


def lenient_answer(
    text: str, /, *, think_tags: tuple[str, str] = THINK_TAGS, answer_tags: tuple[str, str] = ANSWER_TAGS, **_columns
) -> str | None:
    """The last complete non-empty answer block after any (closed) think block, else ``None``. Other keywords are
    ignored.

    >>> lenient_answer("Sure. <answer>4</answer> Hope this helps!")
    '4'
    """
    body = strip_think(text, think_tags)
    return None if body is None else last_tag_block(body, answer_tags)


def is_lenient_format(
    text: str,
    *,
    think_tags: tuple[str, str] = THINK_TAGS,
    answer_tags: tuple[str, str] = ANSWER_TAGS,
) -> bool:
    """Whether ``text`` closes any think block it opens and then holds a complete non-empty answer block.

    >>> is_lenient_format("Sure. <answer>4</answer> Hope this helps!")
    True
    """
    return lenient_answer(text, think_tags=think_tags, answer_tags=answer_tags) is not None


def format_reward(
    completions: list,
    *,
    think_tags: tuple[str, str] = THINK_TAGS,
    answer_tags: tuple[str, str] = ANSWER_TAGS,
    require_think: bool = False,
    think_in_prompt: bool = False,
    **kwargs,
) -> list[float]:
    """Strict format reward: 1.0 if a completion is ``[<think>...</think>]<answer>...</answer>`` exactly, else 0.0.

    >>> format_reward(["<think>hm</think><answer>4</answer>", "<answer></answer>", "4"])
    [1.0, 0.0, 0.0]
    """
    return [
        float(
            is_strict_format(
                completion_text(c, index=i),
                think_tags=think_tags,
                answer_tags=answer_tags,
                require_think=require_think,
                think_in_prompt=think_in_prompt,
            )
        )
        for i, c in enumerate(completions)
    ]


def format_reward_lenient(
    completions: list,
    *,
    think_tags: tuple[str, str] = THINK_TAGS,
    answer_tags: tuple[str, str] = ANSWER_TAGS,
    **kwargs,
) -> list[float]:
    """Lenient format reward: 1.0 if there is a complete non-empty answer block after any (closed) think block.

    >>> format_reward_lenient(["Here: <answer>4</answer>.", "<think>hm <answer>4</answer>"])
    [1.0, 0.0]
    """
    return [
        float(is_lenient_format(completion_text(c, index=i), think_tags=think_tags, answer_tags=answer_tags))
        for i, c in enumerate(completions)
    ]
