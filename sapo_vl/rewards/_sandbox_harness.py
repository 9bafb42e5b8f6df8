"""Test harnesses run inside the sandbox, and the host-side judges of their output.

Three test modes (see `sapo_vl.rewards.code`):

- ``humaneval``: the program defines the function, the test code defines ``check(candidate)`` (assert-based),
  and the driver calls ``check(<entry_point>)``. Passing means the driver reached its end and wrote a
  per-run random nonce AFTER ``check`` returned, so a completion that calls ``sys.exit(0)`` or
  ``os._exit(0)`` before the tests run does not pass.
- ``function_call``: the driver calls ``fn(*args)`` (or ``Solution().fn(*args)``, LeetCode style) for each
  case and writes each return value as JSON on a nonce-tagged line. The HOST compares values with the
  expected outputs, which never enter the sandbox.
- ``stdin``: the program is run as ``__main__`` once per case with the case input on stdin; the host
  compares stdout with the expected output (`outputs_match`).

The driver gets its spec (program, tests, nonce, call inputs) as JSON on stdin, then points fd 0 at
/dev/null before running user code, so the program cannot read the nonce from stdin or its own source.
Known limit: a program can still dig the nonce out of the driver's frames (``sys._getframe``) or fool
assert-based ``check`` functions with objects whose ``__eq__`` always returns True. Function-call and
stdin modes compare on the host and are not open to either.
"""

from __future__ import annotations

import json
import math
import re

SOLUTION_NAME = "__sapo_solution__"  # not "__main__": demo code under `if __name__ == "__main__"` stays off

_PRELUDE = '''import json, os, sys


def _sapo_spec():
    spec = json.loads(sys.stdin.read())
    fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)
    return spec


def _sapo_load(spec):
    ns = {"__name__": "SOLUTION_NAME", "__builtins__": __builtins__}
    exec(compile(spec["program"], "solution.py", "exec"), ns)
    return ns


def _sapo_emit(text):
    sys.stdout.flush()
    os.write(1, ("\\n" + text + "\\n").encode())
'''.replace("SOLUTION_NAME", SOLUTION_NAME)

HUMANEVAL_DRIVER = _PRELUDE + '''

def _sapo_main():
    spec = _sapo_spec()
    nonce = spec.pop("nonce")
    ns = _sapo_load(spec)
    exec(compile(spec["tests"], "tests.py", "exec"), ns)
    if "check" not in ns:
        raise NameError("the test code defines no check(candidate) function")
    if spec["entry_point"] not in ns:
        raise NameError("the solution defines no %r" % spec["entry_point"])
    ns["check"](ns[spec["entry_point"]])
    _sapo_emit(nonce)


_sapo_main()
'''

FUNCTION_CALL_DRIVER = _PRELUDE + '''import signal


def _sapo_resolve(ns, name):
    cls = ns.get("Solution")
    if isinstance(cls, type) and hasattr(cls, name):
        return getattr(cls(), name)
    if callable(ns.get(name)):
        return ns[name]
    raise NameError("the solution defines neither %r nor Solution.%s" % (name, name))


def _sapo_alarm(signum, frame):
    raise TimeoutError("per-case time limit")


def _sapo_call(fn, args, per_case_s):
    signal.signal(signal.SIGALRM, _sapo_alarm)
    signal.setitimer(signal.ITIMER_REAL, per_case_s)
    try:
        return fn(**args) if isinstance(args, dict) else fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _sapo_main():
    spec = _sapo_spec()
    nonce = spec.pop("nonce")
    fn = _sapo_resolve(_sapo_load(spec), spec["fn_name"])
    for i, args in enumerate(spec["inputs"]):
        try:
            out = {"i": i, "ok": True, "value": json.loads(json.dumps(_sapo_call(fn, args, spec["per_case_s"])))}
        except BaseException as exc:  # SystemExit too: one bad case must not hide the others
            out = {"i": i, "ok": False, "error": type(exc).__name__}
        _sapo_emit(nonce + " " + json.dumps(out))


_sapo_main()
'''


def parse_call_results(stdout: str, nonce: str, n_cases: int) -> list[tuple[bool, object]]:
    """Per case: (returned normally, JSON value) from the nonce-tagged lines; missing cases -> (False, None)."""
    results: list[tuple[bool, object]] = [(False, None)] * n_cases
    prefix = nonce + " "
    for line in stdout.splitlines():
        if not line.startswith(prefix):
            continue
        try:
            doc = json.loads(line[len(prefix):])
            i = int(doc["i"])
        except (ValueError, KeyError, TypeError):
            continue
        if 0 <= i < n_cases and doc.get("ok"):
            results[i] = (True, doc.get("value"))
    return results


# ---------------------------------------------------------------------------------------- comparisons
_INT_RE = re.compile(r"[+-]?\d+\Z")
_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")


def _numbers_close(a: float, b: float, tol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol * max(1.0, abs(b))


def values_match(actual: object, expected: object, tol: float = 1e-6) -> bool:
    """JSON-value equality; ints exact, floats within `tol` (absolute below 1, relative above), bools strict."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    if isinstance(actual, (int, float)) and isinstance(expected, (int, float)):
        if isinstance(actual, int) and isinstance(expected, int):
            return actual == expected
        return _numbers_close(float(actual), float(expected), tol)
    if isinstance(actual, list) and isinstance(expected, list):
        return len(actual) == len(expected) and all(values_match(a, e, tol) for a, e in zip(actual, expected))
    if isinstance(actual, dict) and isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(values_match(actual[k], expected[k], tol) for k in actual)
    return actual == expected


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip("\n").rstrip().splitlines()]


def _tokens_match(got: str, want: str, tol: float) -> bool:
    if got == want:
        return True
    if _INT_RE.match(got) and _INT_RE.match(want):
        return int(got) == int(want)
    if _FLOAT_RE.match(got) and _FLOAT_RE.match(want):
        return _numbers_close(float(got), float(want), tol)
    return False


def outputs_match(actual: str, expected: str, tol: float = 1e-6) -> bool:
    """LiveCodeBench-style stdout comparison.

    1. Strip trailing whitespace on each line and leading/trailing blank lines; equal line lists pass.
    2. Otherwise, with the same number of lines, compare whitespace-separated tokens line by line: equal
       strings, equal integers (exact), or decimal numbers within `tol` (absolute below 1, relative above).
    """
    got, want = _lines(actual), _lines(expected)
    if got == want:
        return True
    if len(got) != len(want):
        return False
    for g_line, w_line in zip(got, want):
        g_tok, w_tok = g_line.split(), w_line.split()
        if len(g_tok) != len(w_tok) or not all(_tokens_match(g, w, tol) for g, w in zip(g_tok, w_tok)):
            return False
    return True
