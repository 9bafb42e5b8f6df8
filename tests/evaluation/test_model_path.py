"""``--model``: generation through sapo_vl.rollout with the offline tiny Qwen3-VL-MoE, then the same scoring."""

import pytest
from eval_helpers import EVAL_DIR, read_jsonl

pytest.importorskip("sapo_vl.rollout.generate")

from sapo_vl.evaluation import harness  # noqa: E402
from sapo_vl.evaluation.harness import EvalConfig, run_eval  # noqa: E402
from sapo_vl.evaluation.samples import SampleLogError  # noqa: E402
from sapo_vl.models.tiny import TinyConfig, make_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny_eval"), TinyConfig(seed=0)))


def _cfg(model, out, task="easy_vqa", **kw):
    base = dict(tasks=[task], output_dir=str(out), model=model, limit=3, n=2, k=[1, 2], max_new_tokens=4,
                temperature=1.0, batch_size=2, progress=False)
    return EvalConfig(**{**base, **kw})


def test_model_run_generates_n_completions_per_doc_and_records_the_model(tiny_model, tmp_path):
    results = run_eval(_cfg(tiny_model, tmp_path / "o"))
    rows = read_jsonl(tmp_path / "o/samples_easy_vqa.jsonl")
    assert [r["doc_id"] for r in rows] == ["easy_vqa-test-0", "easy_vqa-test-1", "easy_vqa-test-2"]
    assert all(len(r["resps"]) == 2 and all(isinstance(c, str) for c in r["resps"]) for r in rows)
    assert rows[0]["gen_kwargs"]["n"] == 2 and rows[0]["gen_kwargs"]["max_new_tokens"] == 4
    entry = results["results"]["easy_vqa"]
    assert 0.0 <= entry["pass@1,none"] <= 1.0 and "pass@2,none" in entry
    fingerprint = results["config"]["model_fingerprint"]
    assert fingerprint["model_type"] == "qwen3_vl_moe" and len(fingerprint["sha256"]) == 64
    assert results["config"]["device"] in ("cpu", "cuda")


def test_model_rerun_skips_generation_and_other_settings_are_refused(tiny_model, tmp_path, monkeypatch):
    run_eval(_cfg(tiny_model, tmp_path / "o"))
    calls = []
    real = harness._generate
    monkeypatch.setattr(harness, "_generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    run_eval(_cfg(tiny_model, tmp_path / "o"))
    assert calls == []
    run_eval(_cfg(tiny_model, tmp_path / "o", limit=4))
    assert calls == [1]  # only the new doc
    with pytest.raises(SampleLogError, match="another run"):
        run_eval(_cfg(tiny_model, tmp_path / "o", max_new_tokens=5))


def test_system_prompt_task_with_images_generates(tiny_model, tmp_path):
    task = tmp_path / "sys_vqa.yaml"
    text = (EVAL_DIR / "easy_vqa.yaml").read_text().replace("\nname: easy_vqa", "\nname: sys_vqa")
    task.write_text(text.replace("\nverifier:\n", "\nprompt:\n  system: You answer with one word.\nverifier:\n"))
    run_eval(_cfg(tiny_model, tmp_path / "o", task=str(task), limit=2))
    assert len(read_jsonl(tmp_path / "o/samples_sys_vqa.jsonl")) == 2
