"""The samples-file reader (--samples) and the per-sample log."""

import json

import pytest
from eval_helpers import write_jsonl

from sapo_vl.evaluation.samples import SampleLog, SampleLogError, SamplesFileError, read_samples_file


def test_lines_per_completion_accumulate_in_file_order(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"doc_id": "a", "completion": "1"}, {"doc_id": "b", "completion": "x"},
                                              {"doc_id": "a", "completion": "2"}])
    assert read_samples_file(path, ["t"]) == {"t": {"a": ["1", "2"], "b": ["x"]}}


def test_id_and_completion_aliases(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": "c"},
                                              {"id": 7, "resps": ["r1", "r2"]},
                                              {"doc_id": "z", "completions": ["q"]}])
    assert read_samples_file(path, ["t"])["t"] == {"HumanEval/0": ["c"], "7": ["r1", "r2"], "z": ["q"]}


def test_task_key_routes_lines_and_is_required_for_several_tasks(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"task": "a", "doc_id": "1", "completion": "x"},
                                              {"task": "b", "doc_id": "1", "completion": "y"},
                                              {"task": "c", "doc_id": "1", "completion": "z"}])
    assert read_samples_file(path, ["a", "b"]) == {"a": {"1": ["x"]}, "b": {"1": ["y"]}}
    bare = write_jsonl(tmp_path / "bare.jsonl", [{"doc_id": "1", "completion": "x"}])
    with pytest.raises(SamplesFileError, match=r"bare.jsonl:1: no 'task' key"):
        read_samples_file(bare, ["a", "b"])


@pytest.mark.parametrize("line,message", [
    ('{"completion": "x"}', "no doc id"),
    ('{"doc_id": 1}', "no completions"),
    ('{"doc_id": 1, "completions": "x"}', "must be a list of strings"),
    ('{"doc_id": 1, "completions": [1]}', "completion 0 must be a string"),
    ("[1, 2]", "expected a JSON object"),
    ("{nope", "not valid JSON"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "s.jsonl"
    path.write_text('{"doc_id": "ok", "completion": "x"}\n\n' + line + "\n")
    with pytest.raises(SamplesFileError, match=rf"s.jsonl:3: .*{message}"):
        read_samples_file(path, ["t"])


def test_an_empty_samples_file_is_an_error_not_an_empty_table(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(SamplesFileError, match=r"has no samples for \['t'\] \(no lines\)"):
        read_samples_file(tmp_path / "empty.jsonl", ["t"])
    other = write_jsonl(tmp_path / "other.jsonl", [{"task": "math500", "doc_id": "1", "completion": "x"}])
    with pytest.raises(SamplesFileError, match=r"its lines name only tasks \['math500'\]"):
        read_samples_file(other, ["humaneval"])


def test_a_misspelled_task_is_an_error_and_other_tasks_a_visible_warning(tmp_path, capsys):
    path = write_jsonl(tmp_path / "s.jsonl", [{"task": "humaneval", "doc_id": "1", "completion": "x"},
                                              {"task": "humanevl", "doc_id": "2", "completion": "y"}])
    with pytest.raises(SamplesFileError, match=r"task\(s\) \['humanevl'\] look like misspellings of \['humaneval'\]"):
        read_samples_file(path, ["humaneval"])
    path = write_jsonl(tmp_path / "t.jsonl", [{"task": "humaneval", "doc_id": "1", "completion": "x"},
                                              {"task": "math500", "doc_id": "2", "completion": "y"}])
    assert read_samples_file(path, ["humaneval"]) == {"humaneval": {"1": ["x"]}}
    assert "1 lines of" in capsys.readouterr().err


def test_a_non_utf8_line_names_its_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"doc_id": "a", "completion": "x"}\n{"doc_id": "b", "completion": "caf\xe9"}\n')
    with pytest.raises(SamplesFileError, match=r"s.jsonl:2: not valid JSON \(not UTF-8 text"):
        read_samples_file(path, ["t"])


def test_missing_samples_file(tmp_path):
    with pytest.raises(SamplesFileError, match="does not exist"):
        read_samples_file(tmp_path / "none.jsonl", ["t"])


def test_log_last_row_of_a_doc_wins(tmp_path):
    log = SampleLog(tmp_path / "l.jsonl", "k1")
    log.append([{"doc_id": "a", "v": 1}, {"doc_id": "b", "v": 1}])
    log.append([{"doc_id": "a", "v": 2}])
    rows = log.read()
    assert rows["a"]["v"] == 2 and rows["b"]["v"] == 1 and rows["a"]["run_key"] == "k1"


def test_log_refuses_rows_of_another_run_key_unless_overwritten(tmp_path):
    SampleLog(tmp_path / "l.jsonl", "k1").append([{"doc_id": "a"}])
    with pytest.raises(SampleLogError, match="another run"):
        SampleLog(tmp_path / "l.jsonl", "k2").read()
    assert SampleLog(tmp_path / "l.jsonl", "k2", overwrite=True).read() == {}


def test_log_line_that_is_not_an_object_or_lacks_doc_id_is_a_clear_error(tmp_path):
    path = tmp_path / "l.jsonl"
    path.write_text('[1, 2]\n')
    with pytest.raises(SampleLogError, match=r"l.jsonl:1: corrupt line \(expected a JSON object, got list\)"):
        SampleLog(path, "k").read()
    path.write_text('{"run_key": "k"}\n')
    with pytest.raises(SampleLogError, match=r"l.jsonl:1: corrupt line \(no 'doc_id'\)"):
        SampleLog(path, "k").read()


def test_log_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "l.jsonl"
    path.write_text('{"doc_id": "a", "run_key": "k"}\ngarbage\n{"doc_id": "b", "run_key": "k"}\n')
    with pytest.raises(SampleLogError, match=r"l.jsonl:2: corrupt line"):
        SampleLog(path, "k").read()


def test_log_repairs_a_truncated_tail(tmp_path):
    path = tmp_path / "l.jsonl"
    path.write_text(json.dumps({"doc_id": "a", "run_key": "k"}) + '\n{"doc_id": "b", "ru')
    log = SampleLog(path, "k")
    assert list(log.read()) == ["a"]
    log.append([{"doc_id": "b"}])
    assert list(log.read()) == ["a", "b"]
