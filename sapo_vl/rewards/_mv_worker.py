"""A math-verify worker process: reads check requests as JSON lines on stdin, answers on stdout.

Started by :mod:`sapo_vl.rewards._pool` as ``python -c <loader>`` that runs this file; it imports only the standard
library and math-verify (never ``sapo_vl``, whose import pulls in torch), so it starts in well under a second.

Protocol (one JSON object per line):

- on start, after importing and warming up math-verify: ``{"ready": true}``
- request: ``{"pred": str, "gold": str, "float_rounding": int, "numeric_precision": int, "strict": bool,
  "allow_set_relation_comp": bool}``
- reply: ``{"ok": bool}``, or ``{"ok": false, "error": "<exception type>: <message>"}``

math-verify's own timeouts are disabled (``parsing_timeout=None``, ``timeout_seconds=None``): they use
``signal.alarm`` and so work only on a main thread. The parent bounds every request with a wall-clock deadline and
kills this process when it is exceeded. ``SAPO_VL_MATH_WORKER_MEM_MB`` caps the address space (RLIMIT_AS) so
a huge integer raises MemoryError instead of swapping the machine. The worker exits when stdin closes or, even
mid-check, when its parent dies (``_exit_with_parent``).
"""

import json
import logging
import os
import sys
import threading
import time
from functools import lru_cache


def _limit_memory() -> None:
    mem_mb = int(os.environ.get("SAPO_VL_MATH_WORKER_MEM_MB", "0") or 0)
    if mem_mb > 0:
        import resource

        limit = mem_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _exit_with_parent() -> None:
    """Never outlive the trainer, even in the middle of a check (no orphan left burning a core).

    On Linux the kernel sends SIGKILL when the parent dies (``PR_SET_PDEATHSIG``; the pool spawns workers from one
    long-lived thread, because the signal follows the creating thread). Elsewhere a thread polls the parent pid,
    which a C-level computation holding the GIL can delay."""
    parent = int(os.environ.get("SAPO_VL_MATH_PARENT_PID", "0")) or os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(0)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _as_latex_env(text: str) -> str:
    """Wrap an answer span in ``$...$`` so math-verify's LaTeX extractor sees exactly that span.

    Unescaped ``$`` are delimiters, not content, and inline math cannot span lines."""
    out = []
    prev = ""
    for ch in text:
        if ch == "$" and prev != "\\":
            prev = ch
            continue
        out.append(" " if ch in "\r\n" else ch)
        prev = ch
    return "$" + "".join(out).strip() + "$"


def main() -> None:
    _exit_with_parent()
    _limit_memory()
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol stream
    sys.stdout = sys.stderr
    logging.disable(logging.WARNING)

    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]

    @lru_cache(maxsize=4096)
    def parsed(text: str):
        return parse(_as_latex_env(text), extraction_config=configs, parsing_timeout=None)

    def check(req: dict) -> bool:
        gold = parsed(req["gold"])
        pred = parsed(req["pred"])
        if not gold or not pred:
            return False
        return bool(
            verify(
                gold,
                pred,
                float_rounding=req.get("float_rounding", 6),
                numeric_precision=req.get("numeric_precision", 15),
                strict=req.get("strict", True),
                allow_set_relation_comp=req.get("allow_set_relation_comp", False),
                timeout_seconds=None,
            )
        )

    check({"pred": "\\frac{1}{2}", "gold": "0.5"})  # warm up: regex compilation, lazy sympy imports
    proto.write(json.dumps({"ready": True}) + "\n")

    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = {"ok": check(json.loads(line))}
        except Exception as exc:  # noqa: BLE001 - any failure inside sympy is a failed check
            reply = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        proto.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
