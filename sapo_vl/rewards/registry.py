"""The reward registry, per-sample routing by verifier, and weighted combination.

Every entry of :data:`REWARDS` is a TRL reward function, called as TRL calls one (:func:`call_reward`)::

    fn(prompts=..., completions=..., completion_ids=..., **columns, trainer_state=..., log_metric=...,
       log_extra=...) -> list[float | None]

with only the keywords its signature names (all of them if it takes ``**kwargs``); ``async def`` ones too. ``None``
means "not applicable to this sample". So any TRL reward function can be registered unchanged, and ours can be
handed to TRL. The built-in verifiers are :class:`~sapo_vl.rewards.verifier.Verifier` objects: also
``extract(completion_text, **row)``, the answer each one grades (what ``sapo-vl eval`` logs and votes on).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sapo_vl.registry import Registry
from sapo_vl.rewards.format import format_reward, format_reward_lenient, lenient_answer, strict_answer
from sapo_vl.rewards.math import extract_answer, math_reward
from sapo_vl.rewards.verifier import Verifier
from sapo_vl.rewards.vqa import (extract_choice, extract_vqa_answer, mcq_reward, ordered_words_partial_reward,
                                ordered_words_reward, vqa_reward)

RewardFn = Callable[..., list]


def code(completions: list, **columns) -> list[float | None]:
    """Code-execution reward: :func:`sapo_vl.rewards.code.code_reward`, imported on first call.

    See that function for the columns it reads (tests to run against the extracted program). Example::

        >>> from sapo_vl.rewards import REWARDS
        >>> fn = REWARDS["code"]  # doctest: +SKIP
        >>> fn(["```python\\nprint(1)\\n```"], **columns_of_a_code_dataset)  # doctest: +SKIP
    """
    from sapo_vl.rewards.code import code_reward  # here: importing sapo_vl.rewards leaves the sandbox unimported

    return code_reward(completions, **columns)


# Each verifier's extract(completion_text, /, **row): the answer its reward grades, read with the columns
# (choices, entry_point / fn_name) and settings (fallback, letters) the reward reads; other keys are ignored.
def _math_answer(text: str, /, fallback: bool | Sequence[str] = True, **row) -> str | None:
    return extract_answer(text, fallback=fallback)


def _choice(text: str, /, choices: Sequence[str] | None = None, letters: str | None = None, **row) -> str | None:
    return extract_choice(text, choices, letters)


def _vqa_answer(text: str, /, **row) -> str | None:
    return extract_vqa_answer(text)


def _program(text: str, /, entry_point: str | None = None, fn_name: str | None = None, **row) -> str | None:
    """:func:`sapo_vl.rewards.code.extract_code`, imported on first call (like ``code``)."""
    from sapo_vl.rewards.code import extract_code  # here, as in code()

    return extract_code(text, entry_point=entry_point or fn_name)


def auto(completions: list, reward: list | None = None, verifier: list | None = None, **columns) -> list[float | None]:
    """Route each sample to the reward its record names: ``REWARDS[reward[i]]`` (the record field ``reward`` of
    :mod:`sapo_vl.data`; a column named ``verifier`` is accepted instead). A ``None`` name gives ``None``.

    Each registered function is called once, on its samples only, with every per-sample column subset to match.

    >>> auto(["\\\\boxed{4}", "(B)", "?"], reward=["math", "mcq", None], answer=["4", "B", "x"])
    [1.0, 1.0, None]
    """
    names = verifier if verifier is not None else reward
    if names is None:
        raise ValueError("reward 'auto' needs the dataset column 'reward' (or 'verifier'): a reward name per sample")
    n = len(completions)
    if isinstance(names, str) or len(names) != n:
        raise ValueError(f"reward 'auto': the reward-name column must be a list of {n} names, got {names!r:.100}")
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        if name is not None:
            if name == "auto":
                raise ValueError(f"reward 'auto': sample {i} names reward 'auto', which would recurse")
            groups.setdefault(name, []).append(i)
    rewards: list[float | None] = [None] * n
    for name, idx in groups.items():
        fn = REWARDS[name]
        sub = {
            key: [value[i] for i in idx] if isinstance(value, (list, tuple)) and len(value) == n else value
            for key, value in columns.items()
        }
        if callable(log := columns.get("log_extra")):  # a subset's column, spread back over the batch
            sub["log_extra"] = lambda c, values, at=idx: log(c, list(map(dict(zip(at, values)).get, range(n))))
        values = call_reward(name, fn, {**sub, "completions": [completions[i] for i in idx]})
        for i, v in zip(idx, values):
            rewards[i] = v
    return rewards


REWARDS: Registry = Registry("reward", {
    "math": Verifier("math", math_reward, _math_answer, votable=True),
    "mcq": Verifier("mcq", mcq_reward, _choice, votable=True),
    "vqa": Verifier("vqa", vqa_reward, _vqa_answer, votable=True),
    "ordered_words": Verifier("ordered_words", ordered_words_reward, _vqa_answer, votable=True),
    "ordered_words_partial": Verifier("ordered_words_partial", ordered_words_partial_reward, _vqa_answer),
    "format": Verifier("format", format_reward, strict_answer),
    "format_lenient": Verifier("format_lenient", format_reward_lenient, lenient_answer),
    "code": Verifier("code", code, _program),
    "auto": auto,  # routing, not a verifier: it grades nothing itself
})

# ``@register_reward("mine")`` or ``register_reward("mine", fn)``; a taken name needs ``overwrite=True``.
register_reward = REWARDS.register


def is_async(fn: RewardFn) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def _accepted(fn: RewardFn, kwargs: dict) -> dict:
    """The keyword arguments ``fn`` takes: all of them if it has ``**kwargs`` (or no readable signature)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def call_reward(name: str, fn: RewardFn, kwargs: dict) -> list[float | None]:
    """``fn`` called with the keyword arguments it takes (an ``async def`` one run to completion here), its output
    checked: one float or None per completion."""
    out = fn(**_accepted(fn, kwargs))
    return _check_output(asyncio.run(out) if inspect.iscoroutine(out) else out, len(kwargs["completions"]), name)


async def acall_reward(name: str, fn: RewardFn, kwargs: dict) -> list[float | None]:
    """:func:`call_reward` for an ``async def`` reward, awaited on the caller's event loop."""
    return _check_output(await fn(**_accepted(fn, kwargs)), len(kwargs["completions"]), name)


def _check_output(values: object, n: int, name: str) -> list[float | None]:
    """A reward function's output as floats: one per completion, each a real number (numpy scalars too, as TRL
    reward functions often return) or None; NaN and bools are refused."""
    if hasattr(values, "tolist") and not isinstance(values, (list, tuple)):  # a numpy array or a tensor
        values = values.tolist()
    if not isinstance(values, (list, tuple)) or len(values) != n:
        got = f"{len(values)} values" if isinstance(values, (list, tuple)) else type(values).__name__
        raise ValueError(f"reward {name!r} must return a list of {n} values (one per completion), got {got}")
    out: list[float | None] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        if isinstance(v, bool) or type(v).__name__ == "bool_" or not isinstance(v, numbers.Real) \
                or math.isnan(float(v)):
            raise ValueError(f"reward {name!r} returned {v!r} for sample {i}; expected a number or None")
        out.append(float(v))
    return out


@dataclass
class RewardBreakdown:
    """The combined rewards (``total``) and each component's raw values, keyed by component name."""

    total: list[float | None]
    components: dict[str, list[float | None]]


class CombinedReward:
    """A weighted sum of reward functions that is itself a TRL reward function.

    For each sample, the total is ``sum_j w_j * r_j`` over the components ``j`` whose value ``r_j`` is not
    ``None`` (a ``None`` component is "not applicable" and contributes nothing); with ``normalize=True`` it is
    divided by the sum of those components' weights (a weighted mean). If no component applies, the total is
    ``None``. :meth:`breakdown` also returns the per-component values (for logging).
    """

    def __init__(self, items: list[tuple[str, RewardFn, float]], normalize: bool = False):
        self.items = items
        self.normalize = normalize
        self.__name__ = "combined(" + "+".join(name for name, _, _ in items) + ")"

    def breakdown(self, completions: list, **columns) -> RewardBreakdown:
        kwargs = {**columns, "completions": completions}
        components = {name: call_reward(name, fn, kwargs) for name, fn, _ in self.items}
        return RewardBreakdown(total=self.total(components, len(completions)), components=components)

    def total(self, components: dict[str, list[float | None]], n: int) -> list[float | None]:
        """The weighted sum of each sample's applicable components (``None`` where none applies)."""
        total: list[float | None] = []
        for i in range(n):
            applicable = [(w, components[name][i]) for name, _, w in self.items if components[name][i] is not None]
            if not applicable:
                total.append(None)
                continue
            value = sum(w * r for w, r in applicable)
            weight = sum(w for w, _ in applicable)
            total.append(value / weight if self.normalize and weight != 0 else value)
        return total

    def __call__(self, completions: list, **columns) -> list[float | None]:
        return self.breakdown(completions, **columns).total

    def __repr__(self) -> str:
        return f"CombinedReward({[(name, w) for name, _, w in self.items]}, normalize={self.normalize})"


def combine_rewards(
    funcs_with_weights: Mapping[str, float] | Sequence[tuple[str | RewardFn, float] | str | RewardFn],
    *,
    normalize: bool = False,
) -> CombinedReward:
    """Combine rewards into one TRL reward function (see :class:`CombinedReward` for the ``None`` rule).

    Accepts ``{"math": 1.0, "format": 0.1}``, ``[("math", 1.0), (my_fn, 0.5)]`` or bare names / functions
    (weight 1.0).

    >>> combined = combine_rewards({"math": 1.0, "format": 0.5})
    >>> combined(["<answer>4</answer>", "4"], answer=["4", None])
    [1.5, 0.0]
    >>> combined.breakdown(["4"], answer=[None]).components
    {'math': [None], 'format': [0.0]}
    """
    entries = list(funcs_with_weights.items()) if isinstance(funcs_with_weights, Mapping) else funcs_with_weights
    items: list[tuple[str, RewardFn, float]] = []
    for entry in entries:
        target, weight = entry if isinstance(entry, tuple) else (entry, 1.0)
        fn = REWARDS[target] if isinstance(target, str) else target
        if not callable(fn):
            raise TypeError(f"combine_rewards: {target!r} is neither a reward name nor a callable")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ValueError(f"combine_rewards: weight of {target!r} must be a finite number, got {weight!r}")
        base = target if isinstance(target, str) else getattr(fn, "__name__", type(fn).__name__)
        name, k = base, 2
        while any(name == existing for existing, _, _ in items):
            name, k = f"{base}#{k}", k + 1
        items.append((name, fn, float(weight)))
    if not items:
        raise ValueError("combine_rewards: needs at least one reward")
    return CombinedReward(items, normalize=normalize)
