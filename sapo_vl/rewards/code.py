"""Code verifier: extract the program from a completion, run its tests in the sandbox, score it.

`code_reward(completions, **columns) -> list[float | None]` follows the TRL reward contract (README.md,
"Extend"). Per-sample columns (lists, one entry per completion; TRL passes dataset columns this way):

- ``tests`` (or ``test``): what to run. ``None`` / empty -> the sample's reward is ``None``.
  * humaneval mode: a string of test code that defines ``check(candidate)``;
  * stdin and function_call modes: a list of cases ``{"input": ..., "output": ...}``, or an APPS-style
    dict ``{"inputs": [...], "outputs": [...]}``, or either one as a JSON string.
- ``test_type`` (or ``mode``): ``"humaneval"`` (alias ``"assert"``), ``"stdin"`` (``"stdio"``) or
  ``"function_call"`` (``"functional"``, ``"call_based"``). Missing -> inferred: string tests are humaneval;
  cases with a function name are function_call; other cases are stdin.
- ``entry_point`` / ``fn_name``: the function to test (humaneval: passed to ``check``; function_call: the
  function, or the method of a LeetCode-style ``class Solution``).
- ``code_prefix``: code placed before the completion's code (HumanEval's ``prompt``: imports, helpers and
  the signature). The dataset adapter must map HumanEval's ``prompt`` field here; the TRL ``prompts``
  argument (the chat prompt) is never used as code.

Function-call inputs: a list of positional arguments, or a dict of keyword arguments. When a case's
``input`` is a string it is LiveCodeBench's encoding instead: one JSON value per line (the arguments), and
``output`` is then a JSON string too.

Scoring: 1.0 when every test passes, else 0.0 (``partial_credit=True``: the fraction of cases that pass).
A completion with no extractable code scores 0.0. All sandbox runs of a batch go through one bounded
thread pool (one subprocess per run; ``max_workers`` defaults to the CPU count). Without partial credit,
a sample's remaining stdin cases are skipped once one fails.
"""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from sapo_vl.rewards import _sandbox_harness as harness
from sapo_vl.rewards.text import as_list, completion_text, strip_think
from sapo_vl.rewards.sandbox import ExecResult, run_python

MODES = {"humaneval": "humaneval", "assert": "humaneval", "stdin": "stdin", "stdio": "stdin",
         "function_call": "function_call", "functional": "function_call", "call_based": "function_call"}
PYTHON_TAGS = ("python", "py", "python3", "py3")
_FENCE_RE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class CodeRewardConfig:
    timeout_s: float = 10.0  # humaneval: whole program; stdin: per case; function_call: per case
    memory_mb: int = 1024
    partial_credit: bool = False
    max_workers: int | None = None  # None -> os.cpu_count()
    backend: str = "auto"
    max_output_bytes: int = 1 << 20
    float_tol: float = 1e-6


# ------------------------------------------------------------------------------------------ extraction
def _looks_like_code(text: str) -> bool:
    """Raw text counts as code when it parses as Python (as a module, or as an indented function body)
    and holds at least one statement that is not a bare expression (prose like "Hello" parses too)."""
    for candidate in (text, "def _f():\n" + text):
        try:
            tree = ast.parse(candidate)
        except (SyntaxError, ValueError):
            continue
        body = tree.body[0].body if candidate is not text else tree.body
        return any(not isinstance(node, ast.Expr) for node in body)
    return False


def extract_code(completion, language: str = "python", entry_point: str | None = None) -> str | None:
    """The program in a model completion, or None.

    1. Reasoning is dropped (`strip_think`): text up to the last ``</think>``; an unclosed ``<think>`` -> None.
    2. Closed fenced blocks: those tagged with `language` (for python: python/py/python3) win, then
       untagged ones, then any. Within the winning group the LAST block is taken (the final answer; drafts
       come first) -- except that with `entry_point`, the last block that defines ``def entry_point`` is
       preferred. An unclosed final fence (a truncated answer) is ignored.
    3. With no closed fence, the whole text if it looks like Python code (`_looks_like_code`), else None.
    """
    text = strip_think(completion_text(completion))
    if text is None:
        return None
    blocks = [(tag.lower(), body) for tag, body in _FENCE_RE.findall(text)]
    if blocks:
        wanted = PYTHON_TAGS if language == "python" else (language.lower(),)
        for group in ([b for t, b in blocks if t in wanted], [b for t, b in blocks if not t], [b for _, b in blocks]):
            if group:
                if entry_point:
                    defining = [b for b in group if re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", b)]
                    group = defining or group
                code = group[-1]
                return code if code.strip() else None
    stripped = text.strip("\n")
    if language == "python" and stripped.strip() and _looks_like_code(stripped):
        return stripped + "\n"
    return None


# ------------------------------------------------------------------------------------------ test specs
@dataclass(frozen=True)
class Case:
    input: object
    output: object


@dataclass(frozen=True)
class TestSpec:
    mode: str  # "humaneval" | "stdin" | "function_call"
    tests: object  # humaneval: str; otherwise tuple[Case, ...]
    entry_point: str | None = None
    code_prefix: str = ""


def _cases(tests, where: str) -> tuple[Case, ...]:
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: tests is a string but not JSON ({exc})") from exc
    if isinstance(tests, dict) and "inputs" in tests and "outputs" in tests:
        if len(tests["inputs"]) != len(tests["outputs"]):
            raise ValueError(f"{where}: {len(tests['inputs'])} inputs but {len(tests['outputs'])} outputs")
        tests = [{"input": i, "output": o} for i, o in zip(tests["inputs"], tests["outputs"])]
    if not isinstance(tests, (list, tuple)) or not all(isinstance(c, dict) and {"input", "output"} <= c.keys()
                                                       for c in tests):
        raise ValueError(f"{where}: expected a list of {{'input': ..., 'output': ...}} cases, got {tests!r:.200}")
    return tuple(Case(c["input"], c["output"]) for c in tests)


def _decode_call_case(case: Case, where: str) -> Case:
    """Function-call case -> (argument list or kwargs dict, expected value); LiveCodeBench strings decoded."""
    if not isinstance(case.input, str):
        if not isinstance(case.input, (list, dict)):
            raise ValueError(f"{where}: a function_call input must be a list of arguments or a dict of "
                             f"keyword arguments, got {case.input!r:.100}")
        return case
    try:  # LiveCodeBench: one JSON value per line, and the output is a JSON string too
        args = [json.loads(line) for line in case.input.splitlines() if line.strip()]
        expected = json.loads(case.output) if isinstance(case.output, str) else case.output
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: LiveCodeBench-style case is not JSON lines ({exc}): {case!r:.200}") from exc
    return Case(args, expected)


def make_spec(tests, *, test_type: str | None = None, entry_point: str | None = None,
              code_prefix: str | None = None, where: str = "sample") -> TestSpec | None:
    """Validate one sample's columns into a TestSpec; None when it has no tests."""
    if tests is None or (hasattr(tests, "__len__") and len(tests) == 0):
        return None
    if test_type is None:
        test_type = "humaneval" if isinstance(tests, str) and "def check" in tests else (
            "function_call" if entry_point else "stdin")
    if test_type not in MODES:
        raise ValueError(f"{where}: test_type {test_type!r} is not one of {sorted(MODES)}")
    mode = MODES[test_type]
    if mode in ("humaneval", "function_call") and not entry_point:
        raise ValueError(f"{where}: {mode} tests need an entry_point / fn_name column")
    if mode == "humaneval":
        if not isinstance(tests, str):
            raise ValueError(f"{where}: humaneval tests must be a string of test code, got {type(tests).__name__}")
        return TestSpec(mode, tests, entry_point, code_prefix or "")
    cases = _cases(tests, where)
    if mode == "function_call":
        cases = tuple(_decode_call_case(c, f"{where}, case {i}") for i, c in enumerate(cases))
    return TestSpec(mode, cases, entry_point, code_prefix or "")


# ------------------------------------------------------------------------------------------ jobs
@dataclass
class _Job:
    """One sandbox run; `judge(result)` turns it into per-case pass flags."""
    source: str
    stdin: str | None
    timeout_s: float
    judge: Callable[[ExecResult], list[bool]]
    n_cases: int
    results: list = field(default_factory=list)  # [ExecResult], or [None] when skipped
    passed: list[bool] | None = None


def _program(spec: TestSpec, code: str) -> str:
    return f"{spec.code_prefix}\n{code}" if spec.code_prefix else code


def _humaneval_job(spec: TestSpec, code: str, cfg: CodeRewardConfig) -> _Job:
    nonce = secrets.token_hex(16)
    stdin = json.dumps({"nonce": nonce, "program": _program(spec, code), "tests": spec.tests,
                        "entry_point": spec.entry_point})

    def judge(res: ExecResult) -> list[bool]:
        return [res.status == "passed" and nonce in res.stdout.splitlines()]
    return _Job(harness.HUMANEVAL_DRIVER, stdin, cfg.timeout_s, judge, 1)


def _function_call_job(spec: TestSpec, code: str, cfg: CodeRewardConfig) -> _Job:
    nonce = secrets.token_hex(16)
    inputs = [c.input for c in spec.tests]
    expected = [c.output for c in spec.tests]  # stays on the host
    stdin = json.dumps({"nonce": nonce, "program": _program(spec, code), "fn_name": spec.entry_point,
                        "inputs": inputs, "per_case_s": cfg.timeout_s})

    def judge(res: ExecResult) -> list[bool]:
        got = harness.parse_call_results(res.stdout, nonce, len(inputs))
        return [ok and harness.values_match(v, e, cfg.float_tol) for (ok, v), e in zip(got, expected)]
    total_s = cfg.timeout_s * len(inputs) + 2.0
    return _Job(harness.FUNCTION_CALL_DRIVER, stdin, total_s, judge, len(inputs))


def _stdin_jobs(spec: TestSpec, code: str, cfg: CodeRewardConfig) -> list[_Job]:
    jobs = []
    for case in spec.tests:
        expected = case.output if isinstance(case.output, str) else json.dumps(case.output)

        def judge(res: ExecResult, expected=expected) -> list[bool]:
            return [res.status == "passed" and harness.outputs_match(res.stdout, expected, cfg.float_tol)]
        stdin = case.input if isinstance(case.input, str) else json.dumps(case.input)
        jobs.append(_Job(_program(spec, code), stdin, cfg.timeout_s, judge, 1))
    return jobs


def build_jobs(spec: TestSpec, code: str, cfg: CodeRewardConfig) -> list[_Job]:
    if spec.mode == "humaneval":
        return [_humaneval_job(spec, code, cfg)]
    if spec.mode == "function_call":
        return [_function_call_job(spec, code, cfg)]
    return _stdin_jobs(spec, code, cfg)


# ------------------------------------------------------------------------------------------ execution
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(max_workers: int | None) -> ThreadPoolExecutor:
    workers = max_workers or os.cpu_count() or 1
    with _pools_lock:
        if workers not in _pools:
            _pools[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sapo-code")
        return _pools[workers]


@dataclass
class CodeVerdict:
    """Outcome of one sample: per-case pass flags and the sandbox results behind them."""
    passed: list[bool]
    results: list[ExecResult]
    code: str | None

    @property
    def all_passed(self) -> bool:
        return bool(self.passed) and all(self.passed)

    def score(self, partial_credit: bool = False) -> float:
        if not self.passed:
            return 0.0
        return sum(self.passed) / len(self.passed) if partial_credit else float(self.all_passed)


def _run_job(job: _Job, cfg: CodeRewardConfig, failed: threading.Event) -> None:
    if failed.is_set() and not cfg.partial_credit:
        job.results = [None]  # skipped: a sibling case of the same sample already failed
        return
    res = run_python(job.source, timeout_s=job.timeout_s, memory_mb=cfg.memory_mb, stdin=job.stdin,
                     backend=cfg.backend, max_output_bytes=cfg.max_output_bytes)
    job.results = [res]
    flags = job.judge(res)
    job.passed = flags
    if not all(flags):
        failed.set()


def verify_many(codes: Sequence[str | None], specs: Sequence[TestSpec], cfg: CodeRewardConfig) -> list[CodeVerdict]:
    """Run every sample's jobs through one bounded pool; a verdict per sample, in order."""
    per_sample = [build_jobs(spec, code, cfg) if code is not None else [] for code, spec in zip(codes, specs)]
    flags = [threading.Event() for _ in per_sample]
    futures = [_pool(cfg.max_workers).submit(_run_job, job, cfg, flag)
               for jobs, flag in zip(per_sample, flags) for job in jobs]
    for fut in futures:
        fut.result()
    verdicts = []
    for code, spec, jobs in zip(codes, specs, per_sample):
        if code is None:
            n = 1 if spec.mode == "humaneval" else len(spec.tests)
            verdicts.append(CodeVerdict([False] * n, [], None))
            continue
        passed = [p for job in jobs for p in (job.passed or [False] * job.n_cases)]
        results = [r for job in jobs for r in job.results if r is not None]
        verdicts.append(CodeVerdict(passed, results, code))
    return verdicts


def _column(columns: dict, names: Sequence[str], n: int) -> list:
    for name in names:
        if columns.get(name) is not None:
            return as_list(columns[name], n, name, "code_reward")
    return [None] * n


def code_reward(completions: list, *, config: CodeRewardConfig | None = None, **columns) -> list[float | None]:
    """TRL reward function: 1.0 if the extracted program passes all its tests (see the module docstring).

    Extra keyword arguments override `config` fields (e.g. ``partial_credit=True``, ``timeout_s=5``), so
    ``functools.partial(code_reward, partial_credit=True)`` configures it for a recipe.
    """
    overrides = {k: columns.pop(k) for k in list(columns) if k in CodeRewardConfig.__dataclass_fields__}
    for key, value in overrides.items():
        if isinstance(value, (list, tuple)):
            raise TypeError(f"code_reward: {key} is a setting (one value for the batch), got a per-sample list")
    cfg = replace(config or CodeRewardConfig(), **overrides)
    n = len(completions)
    tests = _column(columns, ("tests", "test"), n)
    modes = _column(columns, ("test_type", "mode"), n)
    entries = _column(columns, ("entry_point", "fn_name"), n)
    prefixes = _column(columns, ("code_prefix",), n)
    specs = [make_spec(t, test_type=m, entry_point=e, code_prefix=p, where=f"code_reward: sample {i}")
             for i, (t, m, e, p) in enumerate(zip(tests, modes, entries, prefixes))]
    active = [i for i, spec in enumerate(specs) if spec is not None]
    codes = [extract_code(completions[i], entry_point=specs[i].entry_point) for i in active]
    verdicts = verify_many(codes, [specs[i] for i in active], cfg)
    rewards: list[float | None] = [None] * n
    for i, verdict in zip(active, verdicts):
        rewards[i] = verdict.score(cfg.partial_credit)
    return rewards
