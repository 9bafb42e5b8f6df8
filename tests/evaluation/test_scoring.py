"""score_docs: rewards, verdicts, the answers each verifier extracted, maj@n for votable verifiers only."""

import pytest

from sapo_vl.evaluation.scoring import ScoringError, prompt_hash, score_docs
from sapo_vl.rewards import REWARDS


def _record(doc_id, answer, reward, **columns):
    return {"id": doc_id, "prompt": f"question {doc_id}", "images": [], "answer": answer, "reward": reward,
            "meta": {}, **columns}


def _score(records, completions, columns=(), kwargs=None, threshold=1.0):
    return score_docs(records, completions, task="t", columns=list(columns), kwargs=kwargs or {},
                      threshold=threshold)


def test_row_layout_for_a_votable_verifier():
    [row] = _score([_record("d1", "4", "math")], [["\\boxed{4}", "\\boxed{5}", "The answer is 4."]])
    assert row == {
        "doc_id": "d1", "task_name": "t", "target": "4", "verifier": "math",
        "resps": ["\\boxed{4}", "\\boxed{5}", "The answer is 4."], "filtered_resps": ["4", "5", "4"],
        "rewards": [1.0, 0.0, 1.0], "verdicts": [True, False, True], "n": 3, "n_correct": 2,
        "reward_mean": pytest.approx(2 / 3), "maj_correct": True, "status": "scored",
        "prompt_hash": prompt_hash("question d1"),
    }


def test_extract_reads_the_record_columns_the_verifier_reads():
    records = [_record("d1", "B", "mcq", choices=["a cat", "a dog"])]
    [row] = _score(records, [["a dog", "a cat"]], columns=["choices"])
    assert row["filtered_resps"] == ["B", "A"] and row["verdicts"] == [True, False]


def test_extract_sees_the_task_settings_the_verifier_was_called_with():
    [row] = _score([_record("d1", "4", "math")], [["The answer is 4."]], kwargs={"fallback": False})
    assert row["rewards"] == [0.0] and row["filtered_resps"] == [None]


def test_code_answers_are_logged_but_not_majority_voted():
    program = "```python\ndef f():\n    return 1\n```"
    [row] = _score([_record("d1", None, "code", tests=None, entry_point="f")], [[program, program]],
                   columns=["tests", "entry_point"])
    assert row["filtered_resps"] == ["def f():\n    return 1\n"] * 2
    assert row["maj_correct"] is None and row["status"] == "not_applicable"


def test_plain_trl_reward_is_scored_without_extracted_answers_or_majority(monkeypatch):
    def long_enough(completions, answer, **columns):  # a TRL reward function: no extract, no votable
        return [float(len(c) >= int(a)) for c, a in zip(completions, answer)]

    monkeypatch.setitem(REWARDS, "long_enough", long_enough)
    rows = _score([_record("d1", "3", "long_enough"), _record("d2", "1", "long_enough")],
                  [["abc", "ab", "abcd"], ["x", "y", ""]])
    assert [r["rewards"] for r in rows] == [[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
    assert [r["filtered_resps"] for r in rows] == [[None] * 3, [None] * 3]
    assert [r["maj_correct"] for r in rows] == [None, None]


def test_unknown_verifier_is_a_scoring_error_naming_the_rewards_and_the_closest():
    with pytest.raises(ScoringError, match=r"task t docs \['d1'\]: unknown reward 'maths'; registered rewards: "
                                           r"auto, code, .*math.* \(did you mean 'math'\?\)"):
        _score([_record("d1", "4", "maths")], [["\\boxed{4}"]])
