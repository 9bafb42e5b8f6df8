"""Tasks report their benchmark's official metric first (results.json, summary.md, the console) with the verifier's
own scores beside it; what an official scorer reads from a completion; task-file and data errors."""

import json

import pytest
from eval_helpers import EVAL_DIR, read_jsonl, write_jsonl

from sapo_vl.cli import main
from sapo_vl.errors import UserError
from sapo_vl.evaluation.official import official_response
from sapo_vl.evaluation.scoring import ScoringError
from sapo_vl.evaluation.tasks import resolve_task

OFFICIAL_OF = {
    "chartqa": "relaxed_accuracy", "docvqa": "anls", "mathvista_testmini": "mathvista_accuracy",
    "mmmu_val": "mmmu_accuracy", "aime2024": "aime_accuracy", "aime2025": "aime_accuracy",
    "humaneval": "pass@1", "mbpp": "pass@1", "livecodebench": "pass@1",  # execution is the official metric
    "ai2d": None, "math500": None, "mathvision": None, "easy_vqa": None, "synthetic_shapes": None,  # none exists
}


def test_every_task_names_its_official_metric():
    assert {name: resolve_task(name).official for name in OFFICIAL_OF} == OFFICIAL_OF


def _data(task):
    spec = resolve_task(task)
    return {task: str((spec.path.parent / spec.fixture).resolve())}


def test_chartqa_reports_the_official_metric_first_and_the_verifier_beside_it(evaluate):
    rows = [{"doc_id": "0", "completions": [r"\boxed{42}", r"\boxed{\$42}"]},  # "$42": only the verifier accepts
            {"doc_id": "1", "completions": ["The answer is 2015."]}]
    results, out = evaluate(["chartqa"], rows, data_paths=_data("chartqa"))
    entry = results["results"]["chartqa"]
    assert list(entry)[:3] == ["alias", "relaxed_accuracy,none", "relaxed_accuracy_stderr,none"]
    assert entry["official_metric"] == "relaxed_accuracy"
    assert entry["relaxed_accuracy,none"] == pytest.approx(0.75) and entry["pass@1,none"] == 1.0
    assert results["higher_is_better"]["chartqa"]["relaxed_accuracy"] is True
    assert [r["official"] for r in read_jsonl(out / "samples_chartqa.jsonl")] == [[1.0, 0.0], [1.0]]
    table = (out / "summary.md").read_text().splitlines()
    assert table[2].startswith("| chartqa | 2 | 2 | ") and "| relaxed_accuracy (official) | 0.7500 |" in table[2]
    assert "| pass@1 | 1.0000 |" in table[3]


def test_docvqa_official_anls_keeps_half_where_the_verifier_gives_zero(evaluate):
    rows = [{"doc_id": "338", "completions": ["J. Sxxxx"]}]  # 4 edits in 8 characters: NL = 0.5
    results, _ = evaluate(["docvqa"], rows, data_paths=_data("docvqa"))
    entry = results["results"]["docvqa"]
    assert entry["anls,none"] == 0.5 and entry["reward_mean,none"] == 0.0


def test_mmmu_and_mathvista_official_metrics_score_the_boxed_answer(evaluate):
    rows = [{"doc_id": "validation_Art_1", "task": "mmmu_val", "completions": [r"\boxed{A}", r"\boxed{(C)}"]},
            {"doc_id": "validation_Math_2", "task": "mmmu_val", "completions": [r"so the answer is \boxed{2}"]},
            {"doc_id": "1", "task": "mathvista_testmini", "completions": [r"\boxed{B}", r"\boxed{red}"]},
            {"doc_id": "3", "task": "mathvista_testmini", "completions": [r"\boxed{2.5}", r"\boxed{2.54}"]}]
    results, out = evaluate(["mmmu_val", "mathvista_testmini"], rows,
                            data_paths={**_data("mmmu_val"), **_data("mathvista_testmini")})
    assert [r["official"] for r in read_jsonl(out / "samples_mmmu_val.jsonl")] == [[1.0, 0.0], [1.0]]
    assert [r["official"] for r in read_jsonl(out / "samples_mathvista_testmini.jsonl")] == [[1.0, 1.0],
                                                                                            [1.0, 1.0]]
    assert results["results"]["mathvista_testmini"]["pass@1,none"] == 0.75  # the verifier's 2.54 is not 2.5


def test_code_tasks_mark_pass_at_1_as_official(evaluate):
    results, out = evaluate(["humaneval"], [{"task_id": "HumanEval/0", "completion": "    return None\n"}], limit=1)
    assert results["results"]["humaneval"]["official_metric"] == "pass@1"
    assert "| pass@1 (official) |" in (out / "summary.md").read_text()
    assert "official" not in read_jsonl(out / "samples_humaneval.jsonl")[0]


def test_the_console_table_prints_the_official_metric_first(tmp_path, capsys):
    samples = write_jsonl(tmp_path / "s.jsonl", [{"doc_id": "2024-I-1", "completions": [r"\boxed{021}"]}])
    code = main(["eval", "--tasks", "aime2024", "--samples", str(samples), "--output-dir", str(tmp_path / "o"),
                 "--data-path", f"aime2024={_data('aime2024')['aime2024']}", "--no-progress"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and "| aime_accuracy (official) | 1.0000 |" in lines[2] and "| pass@1 |" in lines[3]
    assert json.loads((tmp_path / "o" / "results.json").read_text())["results"]["aime2024"]["aime_accuracy,none"] == 1


def _task(tmp_path, official, answer="21"):
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "q": "?", "answer": answer}])
    task = tmp_path / "t.yaml"
    task.write_text(f"name: t\nsource: {{type: jsonl, path: {data}}}\nprompt: '{{q}}'\nofficial: {official}\n"
                    "verifier: {name: math}\n")
    return str(task)


def test_an_unknown_official_metric_names_the_file_and_the_closest(tmp_path):
    with pytest.raises(UserError, match=r"t\.yaml: official: unknown official metric 'anl'.*did you mean 'anls'"):
        resolve_task(_task(tmp_path, "anl"))


def test_a_gold_the_official_metric_cannot_read_is_a_clear_error(evaluate, tmp_path):
    with pytest.raises(ScoringError, match="task t doc a: official metric 'aime_accuracy': .*integer from 0 to 999"):
        evaluate([_task(tmp_path, "aime_accuracy", answer="x+1")], [{"doc_id": "a", "completion": r"\boxed{1}"}])


def test_a_task_file_without_official_keeps_its_old_run_key():
    from sapo_vl.evaluation.harness import _result_parts

    assert "official" not in _result_parts(resolve_task(str(EVAL_DIR / "easy_vqa.yaml")))
    assert _result_parts(resolve_task("chartqa"))["official"] == "relaxed_accuracy"
    assert "official" not in _result_parts(resolve_task("humaneval"))  # a label only: rows are unchanged


@pytest.mark.parametrize(("completion", "response"), [
    (r"so \boxed{42}", "42"),
    (r"\boxed{\text{Germany}}", "Germany"),
    (r"\boxed{12\%}", "12%"),
    (r"$\boxed{-2}$ and $\boxed{1}$", "-2, 1"),
    ("<answer> Yes. </answer>", "Yes"),
    ("The answer is 7.", "7"),
    ("Yes.", "Yes."),  # no box and no cue: the reply as written
    ("<think>hmm</think>\n No. \n", "No."),
    ("<think>never closed", ""),
])
def test_official_response(completion, response):
    assert official_response(completion) == response
