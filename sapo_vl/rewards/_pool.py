"""Time-bounded math-verify checks in a small pool of persistent worker processes.

Why a process pool
------------------
math-verify bounds its work with ``signal.alarm``, which only works on the main thread, and our training loop
scores rewards from a thread pool. Some answers are also genuinely pathological for sympy (``9^{9^{9^9}}``,
``(10^{10})!``): the computation never returns and no Python-level timeout can interrupt it. So each check runs
in a separate process with math-verify's own timeouts off, under a wall-clock deadline enforced here: a worker that
misses its deadline is killed (SIGKILL) and replaced at once, and the check counts as failed. Persistent workers
cost one import of math-verify each (about a second) instead of one per check; a replacement starts importing as
soon as its predecessor dies, so the next check only waits for whatever import time is left.

The pool is safe to use from any thread: each check borrows one idle worker, so at most ``size`` checks run at
once and the others wait for a worker. A forked child process gets its own pool (keyed by pid). POSIX only
(``select`` on pipes).
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import select
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

_WORKER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_mv_worker.py")
# Run the worker file without putting its directory (which holds our math.py) or the cwd on sys.path.
_LOADER = (
    "import os, runpy, sys; sys.path[:] = [p for p in sys.path if p not in ('', '.', os.getcwd())]; "
    "runpy.run_path(sys.argv[1], run_name='__main__')"
)


def default_pool_size() -> int:
    """``SAPO_VL_MATH_WORKERS`` if set, else half the CPU cores, between 1 and 4."""
    env = os.environ.get("SAPO_VL_MATH_WORKERS")
    if env:
        return max(1, int(env))
    return max(1, min(4, (os.cpu_count() or 2) // 2))


class WorkerStartError(RuntimeError):
    """A math-verify worker process failed to start (e.g. math-verify is not installed)."""


class _Worker:
    """One worker process and its line buffer. Used by one thread at a time."""

    def __init__(self, mem_mb: int, startup_timeout_s: float):
        env = dict(os.environ, SAPO_VL_MATH_WORKER_MEM_MB=str(mem_mb), SAPO_VL_MATH_PARENT_PID=str(os.getpid()))
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker; closed in kill()
        self._startup_timeout_s = startup_timeout_s
        self._buf = b""
        self.ready = False
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-c", _LOADER, _WORKER_FILE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            bufsize=0,
            close_fds=True,
            start_new_session=True,  # a terminal's Ctrl-C goes to the trainer, not to every worker
        )

    def _readline(self, deadline: float) -> bytes | None:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:  # EOF: the worker died
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def wait_ready(self) -> None:
        if self.ready:
            return
        line = self._readline(time.monotonic() + self._startup_timeout_s)
        if line is None or not json.loads(line).get("ready"):
            self.kill()
            self._stderr.seek(0)
            tail = self._stderr.read()[-2000:].decode(errors="replace")
            raise WorkerStartError(
                f"math-verify worker did not start within {self._startup_timeout_s:.0f} s "
                f"(exit code {self.proc.returncode}). Its stderr ends with:\n{tail}"
            )
        self.ready = True

    def request(self, payload: dict, timeout_s: float) -> dict | None:
        """Send one check; the reply, or ``None`` on deadline or worker death. Raises BrokenPipeError if the
        worker was already dead before the request was sent."""
        self.wait_ready()
        self.proc.stdin.write((json.dumps(payload) + "\n").encode())
        line = self._readline(time.monotonic() + timeout_s)
        return None if line is None else json.loads(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self._stderr.close()


@dataclass
class PoolStats:
    """Counters for monitoring and the benchmark."""

    checks: int = 0
    timeouts: int = 0
    crashes: int = 0
    errors: int = 0
    restarts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def bump(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


class VerifierPool:
    """Up to ``size`` persistent math-verify processes; :meth:`check` is thread-safe and time-bounded."""

    def __init__(self, size: int | None = None, *, mem_mb: int = 4096, startup_timeout_s: float = 120.0):
        self.size = size or default_pool_size()
        self.mem_mb = mem_mb
        self.startup_timeout_s = startup_timeout_s
        self.stats = PoolStats()
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._spawned = 0
        self._closed = False
        self._executor: ThreadPoolExecutor | None = None

    def _spawn(self) -> _Worker:
        # From one long-lived thread: a worker's parent-death signal (see _mv_worker) fires when the thread that
        # created it exits, so workers must not be created by short-lived reward threads.
        return _spawner().submit(_Worker, self.mem_mb, self.startup_timeout_s).result()

    def _acquire(self) -> _Worker:
        """An idle worker, a new one while the pool is below ``size``, or the next one to come back."""
        while True:
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                pass
            with self._lock:
                if self._closed:
                    raise RuntimeError("VerifierPool is closed")
                grow = self._spawned < self.size
                if grow:
                    self._spawned += 1
            if grow:
                try:
                    return self._spawn()
                except BaseException:
                    with self._lock:
                        self._spawned -= 1
                    raise
            try:  # wake up now and then: a worker that failed to start frees its slot without coming back
                return self._idle.get(timeout=0.5)
            except queue.Empty:
                continue

    def _release(self, worker: _Worker) -> None:
        with self._lock:
            closed = self._closed
        if closed:
            worker.kill()
        else:
            self._idle.put(worker)

    def _replace(self, worker: _Worker) -> None:
        """Kill ``worker`` and put a fresh one (already importing) in the idle queue."""
        worker.kill()
        self.stats.bump(restarts=1)
        with self._lock:
            if self._closed:
                self._spawned -= 1
                return
        try:
            self._idle.put(self._spawn())
        except BaseException:
            with self._lock:
                self._spawned -= 1
            raise

    def check(self, pred: str, gold: str, *, timeout_s: float, **options) -> tuple[bool, str]:
        """``(equal, status)``, status one of ``"ok"``, ``"timeout"`` (deadline hit or worker died on this
        input), ``"error"`` (math-verify raised). Only ``"ok"`` can be equal."""
        payload = {"pred": pred, "gold": gold, **options}
        for attempt in range(2):
            worker = self._acquire()
            try:
                reply = worker.request(payload, timeout_s)
            except (BrokenPipeError, OSError):  # died while idle (e.g. OOM-killed): retry once on a fresh one
                self._replace(worker)
                if attempt == 1:
                    raise
                continue
            except WorkerStartError:
                with self._lock:
                    self._spawned -= 1
                raise
            except BaseException:
                self._replace(worker)
                raise
            break
        self.stats.bump(checks=1)
        if reply is None:
            self.stats.bump(timeouts=1)
            self._replace(worker)
            return False, "timeout"
        self._release(worker)
        if "error" in reply:
            self.stats.bump(errors=1)
            return False, "error"
        return bool(reply["ok"]), "ok"

    def check_many(self, pairs: list[tuple[str, str]], *, timeout_s: float, **options) -> list[tuple[bool, str]]:
        """:meth:`check` for each ``(pred, gold)`` pair, spread over the workers."""
        if len(pairs) <= 1 or self.size == 1:
            return [self.check(p, g, timeout_s=timeout_s, **options) for p, g in pairs]
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.size, thread_name_prefix="sapo-math-verify")
            executor = self._executor
        futures = [executor.submit(self.check, p, g, timeout_s=timeout_s, **options) for p, g in pairs]
        return [f.result() for f in futures]

    def warm_up(self) -> None:
        """Start all workers now and wait until they are ready (otherwise they start on first use)."""
        workers = [self._acquire() for _ in range(self.size)]
        for w in workers:
            w.wait_ready()
        for w in workers:
            self._release(w)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)
        while True:
            try:
                self._idle.get_nowait().kill()
            except queue.Empty:
                break


_POOL: VerifierPool | None = None
_POOL_PID: int | None = None
_POOL_LOCK = threading.Lock()
_SPAWNER: tuple[int, ThreadPoolExecutor] | None = None


def _spawner() -> ThreadPoolExecutor:
    """The process's single worker-spawning thread (a forked child gets its own)."""
    global _SPAWNER
    with _POOL_LOCK:
        if _SPAWNER is None or _SPAWNER[0] != os.getpid():
            _SPAWNER = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="sapo-math-spawn"))
        return _SPAWNER[1]


def get_pool() -> VerifierPool:
    """The process-wide pool (created on first use; a forked child gets a fresh one)."""
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL_PID != os.getpid():
            _POOL = VerifierPool()
            _POOL_PID = os.getpid()
        return _POOL


def configure_pool(size: int | None = None, *, mem_mb: int = 4096) -> VerifierPool:
    """Replace the process-wide pool (closing the old one), e.g. ``configure_pool(8)`` on a large machine."""
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        old = _POOL if _POOL_PID == os.getpid() else None
        _POOL = VerifierPool(size, mem_mb=mem_mb)
        _POOL_PID = os.getpid()
    if old is not None:
        old.close()
    return _POOL


@atexit.register
def _close_pool() -> None:
    if _POOL is not None and _POOL_PID == os.getpid():
        _POOL.close()
