"""A verifier: a reward that can also show the answer it graded.

A :class:`Verifier` is a TRL reward function (``verifier(completions, **columns) -> list[float | None]``, ``None`` =
not applicable) plus ``extract(completion_text, /, **row) -> str | None``, the answer it reads from one completion
(``row``: the record's columns and the reward's settings, e.g. ``choices``, ``entry_point``; unknown keys are
ignored). So a reward is its evaluation: ``sapo-vl eval`` logs ``extract``'s output beside the verdict, and votes
on it for maj@n when ``votable``. Any plain TRL function is a reward too; it just has no ``extract``.

>>> v = Verifier("yes", lambda completions, **columns: [float(c.strip() == "yes") for c in completions],
...              lambda text, /, **row: text.strip())
>>> v(["yes ", "no"]), v.extract(" yes ", answer="yes"), v.__name__
([1.0, 0.0], 'yes', 'yes')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(eq=False)
class Verifier:
    """``score`` grades a batch (the TRL contract); ``extract`` reads one completion's answer (``None``: none)."""

    name: str
    score: Callable[..., list]  # score(completions, **columns) -> list[float | None]
    extract: Callable[..., str | None]  # extract(completion_text, /, **row) -> str | None
    votable: bool = False  # can extracted answers be majority-voted (maj@n)? Program texts and formats cannot.

    def __post_init__(self) -> None:
        # Stand in for the scoring function wherever a reward function is named or documented.
        self.__name__, self.__doc__, self.__module__ = self.name, self.score.__doc__, self.score.__module__

    def __call__(self, completions: list, **columns) -> list[float | None]:
        return self.score(completions, **columns)
