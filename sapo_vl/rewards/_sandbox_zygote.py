"""Fork server for sandbox launches, and the host side of a run's status pipe.

Starting `_sandbox_launcher.py` as a fresh interpreter costs ~20 ms of CPU per run (a third of a short
program's whole sandboxed run). Instead one launcher process per caller process, the zygote, is started
once (``python -I -S _sandbox_launcher.py zygote FD``); each run sends it its config and file descriptors
(stdin, stdout, stderr, the status pipe's write end, and for bwrap the program's source) over a
SOCK_SEQPACKET socketpair. The zygote forks; the child is that run's launcher (see the launcher's
docstring). The zygote never runs user code and exits when the socket closes, i.e. when we exit.

A run is over when its status pipe reaches EOF: every process that holds the write end (the launcher,
which exits last, after reaping its whole tree) is gone.
"""

from __future__ import annotations

import atexit
import marshal
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

from sapo_vl.rewards import _sandbox_support as support

LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_launcher.py")


class Zygote:
    """One fork server; `start` is serialised by the caller's lock (one request/reply at a time)."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", LAUNCHER, "zygote", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], start_new_session=True, env={"LANG": "C.UTF-8"}, cwd="/",
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        self.sock = ours
        self.owner = os.getpid()

    def start(self, cfg: dict, fds: list[int]) -> int:
        """Fork a launcher for `cfg` with `fds` as its fds 0.. ; returns its pid."""
        socket.send_fds(self.sock, [marshal.dumps(cfg, 4)], fds)
        reply = self.sock.recv(4096)
        if not reply:
            raise ConnectionResetError("sandbox zygote exited")
        if reply.startswith(b"E"):
            raise RuntimeError(f"sandbox zygote could not fork a launcher: {reply[1:].decode(errors='replace')}")
        return int(reply)

    def close(self) -> None:
        self.sock.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_lock = threading.Lock()
_zygote: Zygote | None = None


@atexit.register
def _stop_zygote() -> None:
    """Close the socket (the zygote then exits) and reap it, so it is not left to the host init."""
    if _zygote is not None and _zygote.owner == os.getpid():
        _zygote.close()


def start_launcher(cfg: dict, fds: list[int]) -> int:
    """Launch one run through this process's zygote (started on first use, restarted if it died or if we
    are a forked child of the process that started it)."""
    global _zygote
    with _lock:
        for attempt in range(2):
            if _zygote is None or _zygote.owner != os.getpid() or _zygote.proc.poll() is not None:
                _zygote = Zygote()
            try:
                return _zygote.start(cfg, fds)
            except (BrokenPipeError, ConnectionResetError):
                if attempt:
                    raise
                _zygote = None
    raise AssertionError("unreachable")


def _read_until_eof(fd: int, chunks: list[bytes], deadline: float) -> bool:
    """Append what arrives on `fd` until EOF (True) or `deadline` (False)."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return False
        chunk = os.read(fd, 65536)
        if not chunk:
            return True
        chunks.append(chunk)


def wait_run(status_r: int, launcher_pid: int, timeout_s: float, slot_uid: int | None) -> tuple[bool, str]:
    """Wait for a run to end; returns (timed out, status text).

    At the wall-clock limit the program dies first and the launcher survives to reap the tree (no zombies
    left to the host init): with a slot uid every process of that uid is killed; without one the launcher
    gets SIGTERM, which makes it SIGKILL its child. If the launcher lingers, its session (it called
    setsid, so its pgid is its pid) is SIGKILLed. The launcher pid cannot have been reused: the zygote
    reaps it only after it exits, which closes the pipe.
    """
    chunks: list[bytes] = []
    if _read_until_eof(status_r, chunks, time.monotonic() + timeout_s):
        return False, b"".join(chunks).decode(errors="replace")
    if slot_uid is not None:
        support.sweep_uid(slot_uid)
    else:
        _signal_quietly(launcher_pid, signal.SIGTERM, group=False)
    if not _read_until_eof(status_r, chunks, time.monotonic() + 5.0):
        _signal_quietly(launcher_pid, signal.SIGKILL, group=True)
        _read_until_eof(status_r, chunks, time.monotonic() + 5.0)
    return True, b"".join(chunks).decode(errors="replace")


def _signal_quietly(pid: int, sig: int, group: bool) -> None:
    try:
        os.killpg(pid, sig) if group else os.kill(pid, sig)
    except ProcessLookupError:
        pass
