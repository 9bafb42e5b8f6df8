"""What a run needs to survive users: one run per directory, directories that are whole or absent, clean stops.

- ``RunLock(dir)``: an exclusive ``flock`` on ``dir/.lock`` for the life of a run. The OS drops it when the process
  dies (even by SIGKILL), so a stale lock never blocks; a live one is a ``UserError`` naming its PID and start.
- ``atomic_dir(final)``: write a directory under a temporary name and rename it into place, so a kill leaves the
  old one (or none), never half of a new one. A full disk (``ENOSPC``, or torch's ``unexpected pos`` that hides
  it) becomes a ``UserError`` saying how much space the write needed, and the partial temp is removed.
- ``StopFlag``: SIGTERM / SIGINT handling that every phase of a run can poll.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sapo_vl.errors import Interrupted, UserError

LOCK_FILE = ".lock"


class RunLock:
    """``with RunLock(output_dir):`` holds the directory for this process; a second holder gets a UserError."""

    def __init__(self, directory: str | os.PathLike, what: str = "run"):
        self.path = Path(directory) / LOCK_FILE
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            os.close(fd)
            try:
                info = json.loads(holder)
                who = f"PID {info['pid']} on {info['host']}, started {info['started']}"
            except (ValueError, KeyError, TypeError):
                who = "another process"
            raise UserError(f"{self.path.parent} is in use by {who}; wait for that {self.what} to finish, "
                            "stop it, or use another output directory") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock; the file stays (removing it would race a new holder)
            self._fd = None


def _causes(exc: BaseException):
    """``exc``, its cause, and the per-rank errors a ``torch.distributed.checkpoint`` exception wraps."""
    yield exc
    for failure in getattr(exc, "failures", {}).values():
        yield from _causes(failure[0] if isinstance(failure, tuple) else failure)
    if exc.__cause__ is not None:
        yield from _causes(exc.__cause__)


def _is_disk_full(exc: BaseException, where: Path) -> bool:
    for e in _causes(exc):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "unexpected pos" in str(e) or "file write failed" in str(e):  # torch.save on a full disk
            return shutil.disk_usage(where).free < 64 * 2**20
    return False


def disk_full_error(exc: BaseException, final: Path, needed_bytes: int | None = None) -> UserError | None:
    """A ``UserError`` naming the full disk when ``exc`` is one (None otherwise): how much the write of ``final``
    needed (``needed_bytes``, an estimate) and how much is free."""
    final = Path(final)
    if not _is_disk_full(exc, final.parent):
        return None
    need = needed_bytes or 0
    error = UserError(f"no space left on device writing {final} (needed ~{need / 2**20:.0f} MB, "
                      f"{shutil.disk_usage(final.parent).free / 2**20:.0f} MB free at {final.parent}); "
                      "the previous contents are intact")
    error.__cause__ = exc
    return error


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the complete directory ``tmp`` to ``final``, the old ``final`` moved aside first, so a complete directory
    exists at every moment."""
    stale = final.with_name(f".old-{final.name}")
    if final.exists():
        shutil.rmtree(stale, ignore_errors=True)
        final.rename(stale)
    tmp.rename(final)
    shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def atomic_dir(final: str | os.PathLike, needed_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary sibling of ``final`` to fill; on success it replaces ``final`` (``replace_dir``), on failure
    it is removed. ``needed_bytes`` (an estimate) goes into the disk-full message."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException as exc:
        written = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file()) if tmp.exists() else 0
        shutil.rmtree(tmp, ignore_errors=True)
        full = disk_full_error(exc, final, max(needed_bytes or 0, written))
        if full is not None:
            raise full from exc
        raise
    replace_dir(tmp, final)


class StopFlag:
    """SIGTERM / SIGINT: the first asks the run to stop at the next safe point (every phase polls ``stop()``), a
    second one exits at once (128 + signal), without a traceback."""

    def __init__(self):
        self.signal: str | None = None

    def __call__(self) -> bool:
        return self.signal is not None

    def install(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, _frame) -> None:
        if self.signal is not None:
            print(f"[sapo-vl] second {signal.Signals(signum).name}: exiting now", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signal = signal.Signals(signum).name

    def check(self, where: str) -> None:
        if self():
            raise Interrupted(f"stop requested during {where}")
