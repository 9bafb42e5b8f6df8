"""``sapo-vl eval`` through the top-level dispatcher: runs, errors, task listing, prompt export."""

import json

from eval_helpers import read_jsonl, write_jsonl

from sapo_vl.cli import main


def test_eval_with_samples_prints_the_table_and_writes_outputs(tmp_path, capsys):
    samples = write_jsonl(tmp_path / "s.jsonl", [{"doc_id": "easy_vqa-test-0", "completions": ["triangle", "red"]}])
    out = tmp_path / "out"
    code = main(["eval", "--tasks", "easy_vqa", "--samples", str(samples), "--output-dir", str(out),
                 "--limit", "1", "--k", "1,2", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "| easy_vqa | 2 | 1/9673 | 2 | pass@1 | 0.5000 |" in printed and "pass@2" in printed
    assert printed.startswith((out / "summary.md").read_text())
    assert json.loads((out / "results.json").read_text())["results"]["easy_vqa"]["pass@2,none"] == 1.0


def test_user_errors_exit_2_with_a_one_line_message(tmp_path, capsys):
    samples = write_jsonl(tmp_path / "s.jsonl", [{"doc_id": "nope", "completion": "x"}])
    code = main(["eval", "--tasks", "humaneval", "--samples", str(samples), "--output-dir", str(tmp_path / "o"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("sapo-vl eval: error: samples file has 1 doc ids") and "Traceback" not in err


def test_missing_local_data_says_how_to_provide_it(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SAPO_VL_CHARTQA", raising=False)
    samples = write_jsonl(tmp_path / "s.jsonl", [{"doc_id": "0", "completion": "x"}])
    code = main(["eval", "--tasks", "chartqa", "--samples", str(samples), "--output-dir", str(tmp_path / "o")])
    assert code == 2 and "--data-path chartqa=PATH" in capsys.readouterr().err


def test_list_tasks_shows_names_and_files(capsys):
    assert main(["eval", "--list-tasks"]) == 0
    listing = capsys.readouterr().out
    assert "humaneval" in listing and "mathvista_testmini" in listing and ".yaml" in listing


def test_write_prompts_lists_doc_ids_with_openai_messages(tmp_path, capsys):
    path = tmp_path / "prompts.jsonl"
    assert main(["eval", "--tasks", "easy_vqa,humaneval", "--write-prompts", str(path), "--limit", "2"]) == 0
    rows = read_jsonl(path)
    assert [(r["task"], r["doc_id"]) for r in rows] == [("easy_vqa", "easy_vqa-test-0"),
                                                       ("easy_vqa", "easy_vqa-test-1"),
                                                       ("humaneval", "HumanEval/0"), ("humaneval", "HumanEval/1")]
    parts = rows[0]["messages"][0]["content"]
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[1] == {"type": "text", "text": rows[0]["prompt"]}
    assert rows[2]["images"] == [] and rows[2]["generation"]["max_new_tokens"] == 1024


def test_help_documents_the_samples_format(capsys):
    try:
        main(["eval", "--help"])
    except SystemExit as exc:
        assert exc.code == 0
    text = capsys.readouterr().out
    assert '{"doc_id": "HumanEval/0", "completions"' in text and "samples_<task>.jsonl" in text
