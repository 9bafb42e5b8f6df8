"""Math verifier: final-answer extraction and equivalence checking through math-verify.

Extraction (:func:`extract_answer`) follows the shared rules of :mod:`sapo_vl.rewards.text`: drop the think
block (unclosed -> no answer), then the final ``\\boxed{}``/``\\fbox{}`` wins (boxes joined by "and" / commas are one
answer: ``-2, 1``), then the last ``<answer>`` block, then an "answer is X" / "Answer: X" cue (Minerva's "Final
Answer: The final answer is $X$. I hope it is correct." reads ``X``).

Equivalence (:func:`math_equal`) has two stages:

1. a fast path in this process: after light normalisation (``$``, spacing commands, ``\\left``/``\\right``,
   ``\\dfrac`` -> ``\\frac``, a trailing full stop, thousands groups: ``1 000``, ``14{,}916`` and a whole answer
   ``1,000`` are one number) identical strings are equal, two integers are compared as integers, and two decimals
   (scientific notation included) that are exactly equal are equal. A decimal comma (``1,22``) is read as one
   only when the gold is written with one: against gold ``1,22`` a plain number is compared with 1.22 (``1.22``
   and ``1,220`` -- one thousand two hundred twenty -- are decided here), against gold ``1.22`` the answer
   ``1,22`` is the pair it looks like;
2. otherwise math-verify (``verify(parse(gold), parse(pred))``, gold first: the comparison is not symmetric) in a
   worker process under a hard wall-clock deadline (:mod:`sapo_vl.rewards._pool`). This covers
   fractions vs decimals, sets in any order, intervals, ``x = 3`` vs ``3``, units in ``\\text{}``, percentages,
   and symbolic forms (``3\\sqrt{2}`` vs ``\\sqrt{18}``). A check that times out or crashes its worker is
   ``False``.

Results are cached per ``(pred, gold, options)``, timeouts included, so the G samples of one group that repeat a
pathological answer cost one deadline, not G.

Conventions inherited from math-verify 0.9 (pinned by tests): floats are compared after rounding to 6 decimals
(``1/3`` = ``0.333333`` but not ``0.33``); ``50\\%`` equals both ``0.5`` and ``50``; ``(1,2)`` is an open
interval. ``allow_set_relation_comp=True`` (math-verify's option, off by default as there) also equates an interval
with the inequality that describes it (``[-2,7]`` and ``-2 \\le x \\le 7``).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from sapo_vl.rewards._pool import get_pool
from sapo_vl.rewards.text import (
    ANSWER_TAGS,
    THINK_TAGS,
    answer_span,
    as_list,
    completion_text,
    last_boxed,
)

DEFAULT_TIMEOUT_S = 3.0
_CACHE_SIZE = 65536
_CACHE: OrderedDict[tuple, bool] = OrderedDict()
_CACHE_LOCK = threading.Lock()

# LaTeX spacing commands, \left/\right, and whitespace except between two digits ("1 2" stays two numbers; thousands
# groups such as "1 000" are joined before this, by join_groups)
_SPACING = re.compile(r"\\[,;:! ]|\\left|\\right|\\displaystyle|~|(?<!\d)\s+|\s+(?!\d)")
# Thousands groups: a 1-3 digit head, then groups of exactly three after a space (plain, no-break, thin, LaTeX) or
# "{,}". Joined wherever they occur: "1 000" is one thousand, never 1 * 000 (math-verify's reading of "$1 000$").
_GROUPS = re.compile(r"(?<![\d.,])[1-9]\d{0,2}(?:(?:[ \u00a0\u202f]|\\[,;: ]|\{,\})\d{3})+(?!\d)")
_GROUP_HINT = re.compile(r"\d(?:[ \u00a0\u202f]|\\[,;: ]|\{,\})\d")  # a cheap test before _GROUPS
_COMMA_GROUPS = re.compile(r"[-+]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?")  # "1,000" (a whole answer only)
_DECIMAL_COMMA = re.compile(r"[-+]?\d+,\d+")
_PLAIN = re.compile(r"[-+]?(?:\d+(?:[.,]\d+)?|[.,]\d+)")
_INT = re.compile(r"[-+]?\d+")
_DECIMAL = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def extract_answer(
    text: str,
    *,
    fallback: bool | Sequence[str] = True,
    think_tags: tuple[str, str] = THINK_TAGS,
    answer_tags: tuple[str, str] = ANSWER_TAGS,
) -> str | None:
    """The final answer of a completion, or ``None``.

    Priority: last non-empty ``\\boxed{}``/``\\fbox{}`` (nested braces matched) > last ``<answer>`` block >
    "answer is X" / "Answer: X" cue (``fallback``: ``True`` for the defaults, ``False`` to disable, or a list of
    regexes). A ``<think>`` that never closes means no answer.

    >>> extract_answer(r"<think>try \\boxed{1}</think> so \\boxed{\\frac{1}{2}}")
    '\\\\frac{1}{2}'
    >>> extract_answer("<answer>42</answer>")
    '42'
    >>> extract_answer("<think>unfinished \\boxed{3}") is None
    True
    """
    return answer_span(text, fallback=fallback, think_tags=think_tags, answer_tags=answer_tags)


def join_groups(s: str) -> str:
    """Thousands groups written with spaces or ``{,}`` joined into one number; a whole answer grouped with commas
    too (inside a longer answer a comma separates items). ``{,}`` between other digits becomes a plain comma.

    >>> join_groups("1 000"), join_groups("14{,}916"), join_groups("1,234,567.5"), join_groups("1, 234")
    ('1000', '14916', '1234567.5', '1, 234')
    """
    if _GROUP_HINT.search(s):
        s = _GROUPS.sub(lambda m: "".join(c for c in m.group(0) if c.isdigit()), s).replace("{,}", ",")
    if "," in s and _COMMA_GROUPS.fullmatch(bare := s.strip().strip("$").strip()):
        s = bare.replace(",", "")
    return s


def _normalize(s: str) -> str:
    """A :func:`join_groups` answer without ``$``, spacing, ``\\left``/``\\right``, ``\\dfrac``, a final full stop."""
    s = _SPACING.sub("", s.replace("$", ""))
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return s.rstrip(".")


def _bare(s: str) -> str:
    return s.strip().strip("$").strip().rstrip(".")


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", "."))
    except InvalidOperation:
        return None


def fast_equal(pred: str, gold: str) -> bool | None:
    """The cheap stage of :func:`math_equal`: ``True``/``False`` when decidable by string and number rules alone,
    ``None`` when math-verify is needed."""
    pred, gold = join_groups(pred), join_groups(gold)
    p, g = _normalize(pred), _normalize(gold)
    if not p or not g:
        return False
    if p == g:
        return True
    if "," in p or "," in g:
        bare_p, bare_g = _bare(pred), _bare(gold)  # spaces kept: "1, 2" is a pair, never a decimal
        if _DECIMAL_COMMA.fullmatch(bare_g) and _PLAIN.fullmatch(bare_p) and _decimal(bare_p) == _decimal(bare_g):
            return True  # the gold writes a decimal comma, so the answer may too (else math-verify: a pair)
        if _DECIMAL_COMMA.fullmatch(bare_p) and _PLAIN.fullmatch(bare_g):
            return False  # the gold does not: "0,125" is no decimal here (math-verify would read one)
    if _INT.fullmatch(p) and _INT.fullmatch(g):
        return int(p) == int(g)
    if _DECIMAL.fullmatch(p) and _DECIMAL.fullmatch(g) and _decimal(p) == _decimal(g):
        return True
    return None


def _cache_get(key: tuple) -> bool | None:
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    return None


def _cache_put(key: tuple, value: bool) -> None:
    with _CACHE_LOCK:
        _CACHE[key] = value
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)


def math_equal_many(
    pairs: Sequence[tuple[str | None, str]],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    float_rounding: int = 6,
    numeric_precision: int = 15,
    strict: bool = True,
    allow_set_relation_comp: bool = False,
) -> list[bool]:
    """:func:`math_equal` over ``(pred, gold)`` pairs; the pairs that need math-verify run on all workers."""
    options = {"float_rounding": float_rounding, "numeric_precision": numeric_precision, "strict": strict,
               "allow_set_relation_comp": allow_set_relation_comp}
    results: list[bool | None] = []
    pending: dict[tuple, list[int]] = {}
    for i, (pred, gold) in enumerate(pairs):
        pred = "" if pred is None else str(pred)
        gold = str(gold)
        decided = fast_equal(pred, gold)
        key = (pred, gold, timeout_s, *options.values())
        if decided is None:
            decided = _cache_get(key)
        results.append(decided)
        if decided is None:
            pending.setdefault(key, []).append(i)
    if pending:
        keys = list(pending)
        outcomes = get_pool().check_many([(join_groups(k[0]), join_groups(k[1])) for k in keys],
                                         timeout_s=timeout_s, **options)
        for key, equal in zip(keys, outcomes):
            _cache_put(key, equal)
            for i in pending[key]:
                results[i] = equal
    return [bool(r) for r in results]


def math_equal(
    pred: str | None,
    gold: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    float_rounding: int = 6,
    numeric_precision: int = 15,
    strict: bool = True,
    allow_set_relation_comp: bool = False,
) -> bool:
    """Whether answer ``pred`` is mathematically equivalent to ``gold`` (math-verify semantics, gold first).

    Works identically on any thread; every check finishes within about ``timeout_s`` seconds (a check that
    does not is ``False``). ``float_rounding``, ``numeric_precision``, ``strict`` and ``allow_set_relation_comp``
    (an interval equals the inequality describing it) are math-verify's.

    >>> math_equal("0.5", "\\\\frac{1}{2}")
    True
    >>> math_equal("\\\\{2, 1\\\\}", "\\\\{1, 2\\\\}")
    True
    >>> math_equal("-3", "3")
    False
    """
    return math_equal_many(
        [(pred, gold)],
        timeout_s=timeout_s,
        float_rounding=float_rounding,
        numeric_precision=numeric_precision,
        strict=strict,
        allow_set_relation_comp=allow_set_relation_comp,
    )[0]


def _gold_list(gold: object, i: int) -> list[str]:
    """Acceptable gold answers of sample ``i``: a string (a full solution's final ``\\boxed{}``, boxes joined by
    connectors read together), a number, or a list of those."""
    items = list(gold) if isinstance(gold, (list, tuple)) else [gold]
    golds = []
    for g in items:
        if isinstance(g, bool) or not isinstance(g, (str, int, float)):
            raise TypeError(f"math_reward: answer of sample {i} must be a string or number, got {g!r:.100}")
        g = str(g)
        boxed = last_boxed(g) if ("\\boxed" in g or "\\fbox" in g) else None
        golds.append(boxed or g)
    if not golds:
        raise ValueError(f"math_reward: answer of sample {i} is an empty list")
    return golds


def math_reward(
    completions: list,
    answer: list | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    fallback: bool | Sequence[str] = True,
    allow_set_relation_comp: bool = False,
    **kwargs,
) -> list[float | None]:
    """Math reward: 1.0 if the extracted final answer is equivalent to the gold ``answer``, else 0.0.

    TRL reward contract: ``completions`` (strings or chat messages) and the dataset column ``answer`` (one entry
    per completion: a string, a number, or a list of acceptable answers; ``None`` -> this sample's reward is
    ``None``, not applicable). Unknown keyword arguments (``prompts``, ``completion_ids``, other columns) are
    ignored. No extractable answer scores 0.0. ``allow_set_relation_comp`` is :func:`math_equal`'s.

    >>> math_reward(["... so \\\\boxed{\\\\frac{1}{2}}", "<answer>0.4</answer>", "x"], answer=["0.5", "0.5", None])
    [1.0, 0.0, None]
    """
    if answer is None:
        raise ValueError("math_reward needs the dataset column 'answer' (gold answers), which was not passed")
    answers = as_list(answer, len(completions), "answer", "math_reward")
    pairs: list[tuple[str | None, str]] = []
    owners: list[int] = []
    for i, (completion, gold) in enumerate(zip(completions, answers)):
        if gold is None:
            continue
        pred = extract_answer(completion_text(completion, index=i), fallback=fallback)
        for g in _gold_list(gold, i):
            pairs.append((pred, g))
            owners.append(i)
    rewards: list[float | None] = [None if gold is None else 0.0 for gold in answers]
    for i, equal in zip(owners, math_equal_many(pairs, timeout_s=timeout_s,
                                                allow_set_relation_comp=allow_set_relation_comp)):
        if equal:
            rewards[i] = 1.0
    return rewards
