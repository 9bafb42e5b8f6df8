"""Benchmark-specific row transforms, named from task YAML files (``adapter: mathvista``).

Each adapter takes one row in the benchmark's public field layout and returns a new row with derived fields the
prompt template and verifier read: ``options_block`` (lettered choices, "" when there are none), a normalised
``answer`` (the option letter for multiple choice), ``reward`` (the verifier for this row when a benchmark mixes
multiple choice and free-form questions), ``tests`` for code, and ``meta``. Adapters never guess: a row whose gold
answer cannot be mapped onto its options raises a :class:`TaskDataError` naming the doc and the field.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import pickle
import re
import textwrap
import zlib
from typing import Any

from sapo_vl.errors import DataError
from sapo_vl.registry import Registry

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class TaskDataError(DataError):
    """A task's data cannot be read or mapped: missing path, a malformed row, an answer no option matches."""


def options_block(options: list[Any]) -> str:
    """Lettered options, one a line: ``(A) first`` ... ; empty string for no options."""
    return "\n".join(f"({LETTERS[i]}) {opt}" for i, opt in enumerate(options))


def _as_list(value: Any, where: str, name: str) -> list[Any]:
    """A list field that may arrive as a list, a numpy array, a Python-literal string, or JSON."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TaskDataError(f"{where}: field {name!r} is not a list literal: {text[:80]!r}") from exc
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise TaskDataError(f"{where}: field {name!r} must be a list, got {type(value).__name__}")
    return list(value)


def _letter_for(answer: Any, options: list[Any], where: str) -> str:
    """The letter of the gold answer: already a letter in range, or the text of one of the options."""
    text = str(answer).strip()
    if len(text) == 1 and text.upper() in LETTERS[: len(options)]:
        return text.upper()
    for i, opt in enumerate(options):
        if str(opt).strip() == text:
            return LETTERS[i]
    raise TaskDataError(f"{where}: answer {answer!r} is neither an option letter nor one of the options {options}")


def _choice_row(row: dict, options: list[Any], answer: Any, where: str) -> dict:
    return {**row, "options_block": options_block(options), "answer": _letter_for(answer, options, where),
            "reward": "mcq", "choices": [str(o) for o in options]}


def _free_form_row(row: dict, **extra: Any) -> dict:
    return {**row, "options_block": "", "answer": str(row.get("answer")), "reward": "math", "choices": None, **extra}


def _mathvista_hint(row: dict) -> str:
    """The answer-format hint for a free-form MathVista question (from answer_type / precision)."""
    kind = row.get("answer_type")
    if kind == "integer":
        return "The answer is an integer."
    if kind == "float":
        places = int(row.get("precision") or 1)
        return f"The answer is a decimal number with {places} decimal place{'s' if places > 1 else ''}."
    if kind == "list":
        return "The answer is a Python list."
    return ""


def mathvista(row: dict, where: str) -> dict:
    """MathVista (pid, question, choices, unit, precision, answer, question_type, answer_type, query):
    multiple choice -> option letter + ``mcq``; free form -> the answer string + ``math``. ``hint`` states the
    expected answer format."""
    meta = {k: row.get(k) for k in ("question_type", "answer_type", "unit", "precision") if k in row}
    if row.get("question_type") == "multi_choice":
        options = _as_list(row.get("choices"), where, "choices")
        if not options:
            raise TaskDataError(f"{where}: question_type is multi_choice but 'choices' is empty")
        return {**_choice_row(row, options, row.get("answer"), where), "hint": "Answer with the option's letter.",
                "meta": meta}
    return _free_form_row(row, hint=_mathvista_hint(row), meta=meta)


def mathvision(row: dict, where: str) -> dict:
    """MathVision (id, question, options, image, answer, solution, level, subject): options present ->
    ``mcq`` with the gold letter; no options -> free-form ``math``."""
    options = _as_list(row.get("options"), where, "options")
    meta = {k: row.get(k) for k in ("level", "subject") if k in row}
    if options:
        return {**_choice_row(row, options, row.get("answer"), where), "meta": meta}
    return _free_form_row(row, meta=meta)


def mmmu(row: dict, where: str) -> dict:
    """MMMU (id, question, options as a list literal string, answer, image_1..image_7, question_type):
    "multiple-choice" -> ``mcq``; "open" -> ``math`` on the answer string. The question's ``<image i>``
    markers stay in the text; the images follow in image_1..image_7 order."""
    options = _as_list(row.get("options"), where, "options")
    meta = {k: row.get(k) for k in ("question_type", "subfield", "topic_difficulty", "img_type") if k in row}
    images = [row[f"image_{i}"] for i in range(1, 8) if row.get(f"image_{i}") is not None]
    if row.get("question_type", "multiple-choice") == "multiple-choice" and options:
        return {**_choice_row(row, options, row.get("answer"), where), "mmmu_images": images, "meta": meta}
    return _free_form_row(row, mmmu_images=images, meta=meta)


def ai2d(row: dict, where: str) -> dict:
    """AI2D as released by lmms-lab (question, options, answer = the option index as a string, image)."""
    options = _as_list(row.get("options"), where, "options")
    answer = str(row.get("answer")).strip()
    if not answer.isdigit() or not 0 <= int(answer) < len(options):
        raise TaskDataError(f"{where}: answer {answer!r} is not an index into {len(options)} options")
    return _choice_row(row, options, LETTERS[int(answer)], where)


def chartqa(row: dict, where: str) -> dict:
    """ChartQA (imgname, query, label): the label is a string in the original release and a one-element list
    on the Hugging Face copy; both become the answer string."""
    label = row.get("label")
    if isinstance(label, (list, tuple)) or hasattr(label, "tolist"):
        label = _as_list(label, where, "label")
        if not label:
            raise TaskDataError(f"{where}: empty 'label'")
        label = label[0]
    return {**row, "answer": str(label)}


def docvqa(row: dict, where: str) -> dict:
    """DocVQA (questionId, question, answers, image, ...): every listed answer is accepted."""
    answers = [str(a) for a in _as_list(row.get("answers"), where, "answers")]
    if not answers:
        raise TaskDataError(f"{where}: 'answers' is empty (the test split has no public answers; use val)")
    return {**row, "answers": answers}


def _mbpp_entry_point(code: str, tests: list[str], where: str) -> str:
    """The function the asserts call: a name both defined by the reference code and called in the tests."""
    defined = re.findall(r"^def\s+([A-Za-z_]\w*)\s*\(", code or "", flags=re.MULTILINE)
    called = set(re.findall(r"([A-Za-z_]\w*)\s*\(", "\n".join(tests)))
    for name in defined:
        if name in called:
            return name
    first = re.match(r"\s*assert\s+(?:not\s+)?\(?\s*(?:set\()?\s*([A-Za-z_]\w*)\s*\(", tests[0])
    if first:
        return first.group(1)
    raise TaskDataError(f"{where}: cannot tell which function the tests call (test_list[0]={tests[0]!r})")


def mbpp(row: dict, where: str) -> dict:
    """MBPP (task_id, text or prompt, code, test_list, test_setup_code / test_imports): ``tests`` wraps the
    asserts in ``check(candidate)`` (the code verifier's HumanEval mode; the asserts call the function by name),
    ``entry_point`` is the function they call, ``tests_block`` the asserts shown in the prompt."""
    tests = [str(t) for t in _as_list(row.get("test_list"), where, "test_list")]
    if not tests:
        raise TaskDataError(f"{where}: 'test_list' is empty")
    imports = "\n".join(_as_list(row.get("test_imports"), where, "test_imports"))
    setup = row.get("test_setup_code") or ""
    body = "\n".join(part for part in (setup, *tests) if part)
    program = (imports + "\n\n" if imports else "") + "def check(candidate):\n" + textwrap.indent(body, "    ")
    entry = _mbpp_entry_point(row.get("code") or "", tests, where)
    return {**row, "tests": program + "\n", "entry_point": entry, "tests_block": "\n".join(tests)}


class _StrOnlyUnpickler(pickle.Unpickler):
    """LiveCodeBench pickles a plain JSON string; refuse any class so a tampered file cannot run code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a test-case blob")


def decode_lcb_tests(blob: Any, where: str) -> list[dict]:
    """LiveCodeBench test cases: a JSON string, or base64(zlib(pickle(JSON string))) for the private ones."""
    if isinstance(blob, list):
        return blob
    if not isinstance(blob, str) or not blob.strip():
        return []
    try:
        return json.loads(blob)
    except json.JSONDecodeError:
        pass
    try:
        text = _StrOnlyUnpickler(io.BytesIO(zlib.decompress(base64.b64decode(blob.encode("utf-8"))))).load()
        return json.loads(text)
    except Exception as exc:
        raise TaskDataError(f"{where}: cannot decode test cases ({type(exc).__name__}: {exc})") from exc


def livecodebench(row: dict, where: str) -> dict:
    """LiveCodeBench code_generation_lite (question_content, starter_code, public_test_cases,
    private_test_cases, metadata): ``tests`` is the list of {input, output, testtype} cases, ``fn_name`` the
    function to call for LeetCode-style ("functional") problems, ``starter_block`` the prompt's code section."""
    tests = decode_lcb_tests(row.get("public_test_cases"), where)
    tests += decode_lcb_tests(row.get("private_test_cases"), where)
    if not tests:
        raise TaskDataError(f"{where}: no public or private test cases")
    meta = row.get("metadata") or {}
    meta = (json.loads(meta) if meta.strip() else {}) if isinstance(meta, str) else meta
    starter = row.get("starter_code") or ""
    if starter.strip():
        block = ("Complete the following starter code; the solution must keep its signature:\n"
                 f"```python\n{starter}\n```")
    else:
        block = ("Write a complete program that reads the input from standard input and prints the answer to "
                 "standard output.")
    info = {k: row.get(k) for k in ("platform", "difficulty", "contest_date") if k in row}
    return {**row, "tests": tests, "fn_name": meta.get("func_name"), "starter_block": block, "meta": info}


# name -> adapter(row, where) -> row; plug-ins add theirs with ADAPTERS.register(name, fn)
ADAPTERS = Registry("eval adapter", {fn.__name__: fn for fn in (mathvista, mathvision, mmmu, ai2d, chartqa, docvqa,
                                                                 mbpp, livecodebench)})
