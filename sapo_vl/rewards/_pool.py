"""Time-bounded math-verify checks in a pebble process pool.

math-verify bounds its work with ``signal.alarm``, which only works on the main thread, while rewards are scored on
threads; and some answers never finish in sympy (``9^{9^{9^9}}``, ``(10^{10})!``), in C code no Python timeout can
interrupt. So every check runs in a worker process of a :class:`pebble.ProcessPool` with math-verify's own
timeouts off, scheduled with ``timeout=``: pebble kills a worker whose check overruns (the check counts as failed)
and starts a replacement. The deadline runs from the moment a worker takes the check, so start-up never counts.

Workers are spawned (fresh interpreters: forking the threaded trainer can deadlock a child), then import
math-verify and run one warm-up check before taking work (about a second). Each dies with SIGTERM at once
(pebble's handler cannot run while sympy holds the GIL). On Linux each also caps its address space at ``mem_mb``
above its start-up size (a huge integer raises MemoryError instead of swapping the machine) and never outlives the
trainer (``PR_SET_PDEATHSIG``, which follows the starting thread: the pool is started from one long-lived thread,
and pebble starts replacements from its own manager thread). A forked trainer gets its own pool.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import Counter
from concurrent.futures import CancelledError, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import lru_cache

from pebble import ProcessExpired, ProcessPool

# fresh interpreters: forking the trainer (torch's, pebble's and the reward threads) can copy a lock another thread
# holds, and the child then hangs before it takes its check, where no deadline runs (seen in the test suite)
_START_METHOD = "spawn"


def default_pool_size() -> int:
    """``SAPO_VL_MATH_WORKERS`` if set, else half the CPU cores, between 1 and 4."""
    env = os.environ.get("SAPO_VL_MATH_WORKERS")
    if env:
        return max(1, int(env))
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def _init_worker(parent_pid: int, mem_mb: int) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        import resource  # POSIX only

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent_pid:  # the trainer died before the signal was armed
            os._exit(0)
        if mem_mb > 0:
            with open("/proc/self/statm") as f:
                inherited = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            limit = inherited + mem_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    logging.disable(logging.WARNING)
    _verify(r"\frac{1}{2}", "0.5", {})  # imports math-verify, compiles its regexes, loads sympy's lazy parts


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


@lru_cache(maxsize=4096)
def _parse(text: str):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse  # in workers only: imports sympy

    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return parse(_as_latex_env(text), extraction_config=configs, parsing_timeout=None)


def _verify(pred: str, gold: str, options: dict) -> bool:
    """One check, in a worker: ``verify(parse(gold), parse(pred))`` (not symmetric: gold first)."""
    from math_verify import verify  # in workers only, as in _parse

    gold_expr, pred_expr = _parse(gold), _parse(pred)
    return bool(gold_expr and pred_expr and verify(gold_expr, pred_expr, timeout_seconds=None, **options))


def _worker_pid() -> int:
    """A worker's pid, after a pause that lets the other workers take the next ones (see ``warm_up``)."""
    time.sleep(0.05)
    return os.getpid()


def _outcome(future) -> tuple[bool, str]:
    try:
        return bool(future.result()), "ok"
    except TimeoutError:
        return False, "timeouts"
    except ProcessExpired:  # died on this input (e.g. at the memory cap)
        return False, "crashes"
    except (BrokenProcessPool, CancelledError):
        raise
    except Exception:  # noqa: BLE001 - anything sympy raises is a failed check
        return False, "errors"


class VerifierPool:
    """``size`` math-verify worker processes; :meth:`check_many` is thread-safe and time-bounded."""

    def __init__(self, size: int | None = None, *, mem_mb: int = 4096):
        self.size = size or default_pool_size()
        self.mem_mb = mem_mb
        self.stats: Counter[str] = Counter()  # ok, timeouts, crashes, errors
        self._lock = threading.Lock()
        self._pool: ProcessPool | None = None
        self._pending: set = set()  # futures not done yet: cancelled by close(), so no caller waits forever
        self._closed = False

    def _schedule(self, fn, *args, timeout: float | None = None):
        """Schedule ``fn(*args)`` on the pebble pool, (re)started from the long-lived starter thread."""
        with self._lock:
            if self._closed:
                raise RuntimeError("VerifierPool is closed")
            if self._pool is None or not self._pool.active:  # not started yet, or broken: its idle workers died
                if self._pool is not None:
                    self._pool.stop()
                    self._pool.join()
                self._pool = ProcessPool(self.size, initializer=_init_worker, initargs=(os.getpid(), self.mem_mb),
                                         context=multiprocessing.get_context(_START_METHOD))
                _starter().submit(self._pool.schedule, _worker_pid).result()  # starts the first workers there
            future = self._pool.schedule(fn, args, timeout=timeout)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        return future

    def check_many(self, pairs: list[tuple[str, str]], *, timeout_s: float, **options) -> list[bool]:
        """Whether each ``(pred, gold)`` pair is equal; a check that overruns ``timeout_s``, crashes its worker or
        raises is ``False``. Spread over the workers; a pool that broke is restarted once."""
        def run() -> list[tuple[bool, str]]:
            futures = [self._schedule(_verify, p, g, options, timeout=timeout_s) for p, g in pairs]
            return [_outcome(f) for f in futures]

        try:
            outcomes = run()
        except BrokenProcessPool:
            outcomes = run()
        with self._lock:
            self.stats.update(status for _, status in outcomes)
        return [equal for equal, _ in outcomes]

    def warm_up(self) -> None:
        """Start the workers now and wait until every one has imported math-verify."""
        pids: set[int] = set()
        while len(pids) < self.size:
            pids.update(f.result() for f in [self._schedule(_worker_pid) for _ in range(self.size)])

    def close(self) -> None:
        with self._lock:
            self._closed, pool, self._pool = True, self._pool, None
        if pool is not None:
            pool.stop()
            pool.join()
        for future in list(self._pending):
            future.cancel()


_POOL: VerifierPool | None = None
_POOL_PID: int | None = None
_POOL_LOCK = threading.Lock()
_STARTER: tuple[int, ThreadPoolExecutor] | None = None


def _starter() -> ThreadPoolExecutor:
    """The process's one long-lived pool-starting thread (a forked child gets its own)."""
    global _STARTER
    with _POOL_LOCK:
        if _STARTER is None or _STARTER[0] != os.getpid():
            _STARTER = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="sapo-math-start"))
        return _STARTER[1]


def get_pool() -> VerifierPool:
    """The process-wide pool (created on first use; a forked child gets a fresh one)."""
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL_PID != os.getpid():
            _POOL, _POOL_PID = VerifierPool(), os.getpid()
        return _POOL


def configure_pool(size: int | None = None, *, mem_mb: int = 4096) -> VerifierPool:
    """Replace the process-wide pool (closing the old one), e.g. ``configure_pool(8)`` on a large machine."""
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        old = _POOL if _POOL_PID == os.getpid() else None
        _POOL, _POOL_PID = VerifierPool(size, mem_mb=mem_mb), os.getpid()
    if old is not None:
        old.close()
    return _POOL


@atexit.register
def _close_pool() -> None:
    if _POOL is not None and _POOL_PID == os.getpid():
        _POOL.close()
